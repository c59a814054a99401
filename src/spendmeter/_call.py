"""One call's lifecycle, shared by the sync and async wrappers.

``Telemetry`` holds what lives for the whole instrumentation (tracer, instruments, prices,
settings, per-model caches). ``Call`` is one LLM call: it starts the span, and finishes it once
with the response or the error, recording metrics and telling budgets what the call cost.

The user's call is sacred: every telemetry step runs under the guard (``spendmeter._guard``) so
that a fault inside spendmeter is logged once and swallowed. Only ``BudgetExceededError``
crosses into the caller.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, Tracer

from spendmeter import _attributes, _neighbours
from spendmeter import semconv as sc
from spendmeter._estimate import worst_case_cost
from spendmeter._fields import field
from spendmeter._guard import Guard
from spendmeter._listeners import SpendListener, budgets_of
from spendmeter._tokens import INLINE_CHARS, prompt_chars
from spendmeter._usage import TokenUsage, token_usage
from spendmeter.errors import BudgetExceededError
from spendmeter.metrics import Instruments
from spendmeter.pricing import UNPRICED, Priced, Pricer

logger = logging.getLogger("spendmeter")

# Per-model caches start afresh past this many entries: an app that calls thousands of
# distinct model names (fine-tunes, deployments) must not grow memory without bound.
MAX_CACHED_MODELS = 1024

# The call running now: LiteLLM calling itself inside it (acompletion runs completion) is
# part of it, while a paid call that other code makes inside it (a custom provider calling
# LiteLLM for a real model) is a call of its own, its child.
CURRENT_CALL: ContextVar[Call | None] = ContextVar("spendmeter_current_call", default=None)


class RequestLike(Protocol):
    """A request sent as several attempts (``spendmeter._requests.Request``), as a call sees it."""

    def attempt_attributes(self, params: Mapping[str, Any]) -> Mapping[str, Any]: ...

    def attempt_ended(self, call: Call, cost: float | None) -> None: ...

    def crossed(self, exceeded: BudgetExceededError) -> None: ...

    def refused(self, refusal: BudgetExceededError) -> None: ...


class _CallIds:
    """Call ids unique across processes and hosts: a random prefix per process (made anew in a
    forked child) and a counter. A shared ledger settles each call once by its id."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix = uuid.uuid4().hex
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter)}"


_call_ids = _CallIds()
_NOT_YET = object()  # a call's worst case, before it is counted
os.register_at_fork(after_in_child=_call_ids.renew)


def new_call_id() -> str:
    """An id unique across processes and hosts (``CallRequest.call_id``)."""
    return _call_ids.next()


# The guarded steps.
_READING_REQUEST = Guard("reading the request")
_READING_USAGE = Guard("reading usage")
_READING_RESPONSE = Guard("reading the response")
_PRICING = Guard("pricing")
_ANNOTATING = Guard("annotating the span")
_RECORDING_METRICS = Guard("recording metrics")
_ENDING_SPAN = Guard("ending the span")
_ENDING_ATTEMPT = Guard("ending an attempt")
_RELEASING = Guard("releasing a reservation")
_CHECKING_BUDGETS = Guard("checking a budget")
_COUNTING = Guard("counting a call in a budget")
_RECORDING_FAILURE = Guard("recording a failed call")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What is the same for every call to one model: computed once, then reused."""

    model: str
    provider: str  # LiteLLM's provider name, used for pricing
    span_name: str
    base: Mapping[str, Any]  # operation, provider, model: on spans and every metric point
    # base + gen_ai.request.stream, indexed by whether the call streams: a span's start
    # attributes when the call has no optional request attributes.
    start: tuple[Mapping[str, Any], Mapping[str, Any]]
    input_tokens: Mapping[str, Any]  # base + gen_ai.token.type=input
    output_tokens: Mapping[str, Any] | None  # None for embeddings: semconv has no output count
    unpriced: Mapping[str, Any]  # model + provider


_OUTPUT_TYPES = {
    sc.OPERATION_IMAGE_GENERATION: sc.OUTPUT_TYPE_IMAGE,
    sc.OPERATION_IMAGE_EDIT: sc.OUTPUT_TYPE_IMAGE,
    sc.OPERATION_IMAGE_VARIATION: sc.OUTPUT_TYPE_IMAGE,
    sc.OPERATION_SPEECH: sc.OUTPUT_TYPE_SPEECH,
}


class Telemetry:
    def __init__(
        self,
        tracer: Tracer,
        instruments: Instruments,
        pricer: Pricer,
        *,
        tracer_provider: Any = None,
        metadata_keys: tuple[str, ...] = (),
        capture_content: bool = False,
        conversation_id_key: str | None = None,
    ) -> None:
        self.tracer = tracer
        self.tracer_provider = tracer_provider  # None: the global provider, read at call time
        self.instruments = instruments
        self.pricer = pricer
        self.metadata_keys = metadata_keys
        self.conversation_id_key = conversation_id_key
        self.capture_content = capture_content
        self._models: dict[tuple[Any, ...], ModelInfo] = {}
        self._warned_unpriced: set[str] = set()
        self._signals = _neighbours.suppression_signals()
        # Looked for at the first call, not at instrument time: under opentelemetry-instrument
        # the other instrumentations may load after spendmeter.
        self._looked_for_neighbours = False

    def call_context(self, span: Span) -> Context:
        """The context a call runs in: its span current, other GenAI instrumentations of the
        provider SDKs that LiteLLM calls told to step aside."""
        if not self._looked_for_neighbours:
            self._looked_for_neighbours = True
            with Guard("looking for other GenAI instrumentations"):
                _neighbours.warn_about_neighbours()
        return _neighbours.call_context(span, self._signals)

    # --- per-model cache ------------------------------------------------------------------
    def model_info(self, operation: str, params: Mapping[str, Any]) -> ModelInfo:
        model = params.get("model")
        custom_provider = params.get("custom_llm_provider")
        if model is None and operation == sc.OPERATION_SEARCH:
            model, custom_provider = _search_model(params)
        elif model is None and operation in _ON_A_VIDEO:
            model, custom_provider = _video_model(params, custom_provider)
        api_base = params.get("api_base")
        key = (operation, model, custom_provider, api_base)
        info = self._models.get(key)
        if info is None:
            if len(self._models) >= MAX_CACHED_MODELS:
                self._models.clear()
            info = self._models[key] = self._describe(operation, model, custom_provider, api_base)
        return info

    def _describe(
        self, operation: str, model: Any, custom_provider: Any, api_base: Any
    ) -> ModelInfo:
        model_name = model if isinstance(model, str) and model else "unknown"
        provider = _litellm_provider(model_name, custom_provider, api_base)
        base = {
            sc.GEN_AI_OPERATION_NAME: operation,
            sc.GEN_AI_PROVIDER_NAME: sc.PROVIDER_NAMES.get(provider, provider),
            sc.GEN_AI_REQUEST_MODEL: model_name,
        }
        # Spans only: the output type an image or speech call asks for, whatever its format.
        output_type = _OUTPUT_TYPES.get(operation)
        output = {sc.GEN_AI_OUTPUT_TYPE: output_type} if output_type else {}
        return ModelInfo(
            model=model_name,
            provider=provider,
            span_name=f"{operation} {model_name}",
            base=base,
            start=(
                {**base, **output, sc.GEN_AI_REQUEST_STREAM: False},
                {**base, **output, sc.GEN_AI_REQUEST_STREAM: True},
            ),
            input_tokens={**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT},
            output_tokens=(
                None
                if operation == sc.OPERATION_EMBEDDINGS
                else {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}
            ),
            unpriced={
                sc.GEN_AI_REQUEST_MODEL: model_name,
                sc.GEN_AI_PROVIDER_NAME: base[sc.GEN_AI_PROVIDER_NAME],
            },
        )

    # --- pricing --------------------------------------------------------------------------
    def price(
        self,
        call: Call,
        response: Any,
        usage: TokenUsage | None,
        duration_s: float,
        stream: Any = None,
    ) -> Priced:
        info = call.info
        priced = self.pricer.price(
            call.operation.call_type,
            info.model,
            info.provider,
            call.params,
            response,
            duration_s,
            usage=usage,
            stream=stream,
        )
        if priced.total is None and response is not None:
            # A model without a price; not a stream that ended with nothing to price.
            self._warn_unpriced(info.model)
        return priced

    def _warn_unpriced(self, model: str) -> None:
        if model not in self._warned_unpriced:
            if len(self._warned_unpriced) >= MAX_CACHED_MODELS:
                self._warned_unpriced.clear()
            self._warned_unpriced.add(model)
            logger.warning(
                "spendmeter: no price for model %r; its calls are reported as unpriced. "
                "Add it to a pricing file (SPENDMETER_PRICING_FILE) or litellm.register_model().",
                model,
            )

    # --- one call -------------------------------------------------------------------------
    def budgets(self) -> tuple[SpendListener, ...]:
        """The budgets that govern a call now: those on the instrumented tracer provider."""
        return budgets_of(self.tracer_provider or trace.get_tracer_provider())

    def begin(
        self,
        operation: _attributes.Operation,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        traced: bool = True,
        parent: Call | None = None,
        request: RequestLike | None = None,
    ) -> Call:
        """Start one call; ``traced=False`` (under ``suppress_instrumentation()``) makes no span
        and records no metric, but budgets still count and cap it: it is paid for all the same.
        ``parent`` is the call this one runs inside; ``request`` the request it is an attempt of.
        """
        params = operation.bind(args, kwargs)
        info = self.model_info(operation.name, params)
        # Shared, never mutated: the SDK copies span attributes, budgets only read them.
        attributes = info.start[params.get("stream") is True]
        optional = read_request(
            params, self.metadata_keys, self.capture_content, self.conversation_id_key
        )
        if optional:
            attributes = {**attributes, **optional}
        if request is not None:
            attributes = {**attributes, **request.attempt_attributes(params)}
        call = Call(self, operation, info, params, attributes, traced=traced)
        call.parent = parent
        call.request = request
        return call


def _search_model(params: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """A web search names its provider, not a model: LiteLLM prices it as the provider's
    ``{provider}/search``."""
    provider = params.get("search_provider")
    if not isinstance(provider, str) or not provider:
        return None, None
    return f"{provider}/search", provider


_ON_A_VIDEO = frozenset(
    {sc.OPERATION_VIDEO_REMIX, sc.OPERATION_VIDEO_EDIT, sc.OPERATION_VIDEO_EXTENSION}
)


def _video_model(params: Mapping[str, Any], custom_provider: Any) -> tuple[Any, Any]:
    """A call on a video names the video, not a model: the model and provider LiteLLM wrote
    into the video's id when it made it (OpenAI's own ids carry neither), and LiteLLM's default
    provider for them, OpenAI."""
    from litellm.types.videos.utils import decode_video_id_with_provider

    video_id = params.get("video_id")
    decoded = decode_video_id_with_provider(video_id) if isinstance(video_id, str) else {}
    provider = custom_provider or decoded.get("custom_llm_provider") or "openai"
    return decoded.get("model_id") or None, provider


def _litellm_provider(model: str, custom_provider: Any, api_base: Any) -> str:
    import litellm

    try:
        _, provider, _, _ = litellm.get_llm_provider(
            model=model, custom_llm_provider=custom_provider, api_base=api_base
        )
    except Exception:
        # LiteLLM will raise its own error for this call; the span still names a provider.
        return custom_provider if isinstance(custom_provider, str) else "unknown"
    return provider or "unknown"


def read_request(
    params: Mapping[str, Any],
    metadata_keys: tuple[str, ...],
    capture_content: bool,
    conversation_id_key: str | None = None,
) -> Mapping[str, Any] | None:
    """The optional attributes of a call's request (``_attributes.request_attributes``);
    ``None`` when reading them failed. Guarded inline, not by decorator: every call runs it."""
    try:
        return _attributes.request_attributes(
            params, metadata_keys, capture_content, conversation_id_key
        )
    except Exception as error:
        _READING_REQUEST.failed(error)
        return None


@Guard("estimating a call's cost")
def _worst_case(call: Call) -> float | None:
    info = call.info
    return worst_case_cost(
        call.telemetry.pricer,
        info.model,
        info.provider,
        info.base[sc.GEN_AI_OPERATION_NAME],
        call.params,
    )


class Call:
    """One LLM call's span and measurements; finished exactly once."""

    __slots__ = (
        "_active",
        "_call_id",
        "_current",
        "_ended",
        "_max_cost",
        "attributes",
        "budgets",
        "context",
        "info",
        "nested",
        "operation",
        "params",
        "parent",
        "request",
        "span",
        "started",
        "telemetry",
        "traced",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        operation: _attributes.Operation,
        info: ModelInfo,
        params: Mapping[str, Any],
        attributes: Mapping[str, Any],
        *,
        traced: bool = True,
    ) -> None:
        self.telemetry = telemetry
        self.operation = operation
        self.info = info
        self.params = params
        self.parent: Call | None = None
        self.request: RequestLike | None = None
        # What paid calls made inside this one returned, and cost: (response, cost).
        self.nested: list[tuple[Any, float | None]] = []
        self.attributes = attributes
        self.traced = traced
        self._max_cost: float | object | None = _NOT_YET
        # The budgets that admit a call are the ones that settle it.
        self.budgets = telemetry.budgets()
        self._call_id: str | None = None
        self._ended = False
        # The context token while the span is current.
        self._active: Token[Context] | None = None
        # The one context the call runs in, made at its start: its span current. Its metric
        # points are recorded in it too, so that their exemplars link to this span.
        self.context: Context | None = None
        self.span: Span = (
            telemetry.tracer.start_span(info.span_name, kind=SpanKind.CLIENT, attributes=attributes)
            if traced
            else INVALID_SPAN
        )
        self.started = time.perf_counter()

    @property
    def call_type(self) -> str:
        """The LiteLLM function called: what LiteLLM prices the call as."""
        return self.operation.call_type

    @property
    def call_id(self) -> str:
        if self._call_id is None:
            self._call_id = new_call_id()
        return self._call_id

    def __enter__(self) -> Call:
        """The call runs: its span current, LiteLLM's calls inside it part of it."""
        self._current = CURRENT_CALL.set(self)
        self._active = self.attach()
        return self

    def __exit__(self, error_type: Any, error: BaseException | None, traceback: Any) -> None:
        # The wrapper ends a failed call (`fail` or `afail`), so that an async call tells its
        # budgets without blocking its event loop.
        CURRENT_CALL.reset(self._current)

    def attach(self) -> Token[Context] | None:
        """Run code in the call's context until ``otel_context.detach`` of the token returned
        (``None``: nothing to detach, the call is not traced)."""
        if not self.traced:
            return None
        if self.context is None:
            self.context = self.telemetry.call_context(self.span)
        return otel_context.attach(self.context)

    def deactivate(self) -> None:
        """Make the span no longer current; a no-op once done."""
        token = self._active
        if token is not None:
            self._active = None
            otel_context.detach(token)

    def admit(self) -> None:
        """Ask every budget whether this call may go out; a refusal ends the span as failed."""
        if not self.budgets:
            return
        try:
            for budget in self.budgets:
                budget.before_call(self.attributes, self)
        except BudgetExceededError as refusal:
            self._refused(refusal)
            self._tell_failed()  # budgets that admitted it first release what they held
            raise
        except Exception as error:  # a budget that fails lets the call go ahead
            _CHECKING_BUDGETS.failed(error)

    async def aadmit(self) -> None:
        if not self.budgets:
            return
        try:
            for budget in self.budgets:
                await budget.abefore_call(self.attributes, self)
        except BudgetExceededError as refusal:
            self._refused(refusal)
            await self._atell_failed()
            raise
        except Exception as error:
            _CHECKING_BUDGETS.failed(error)
        except asyncio.CancelledError as cancelled:
            # Cancelled while a budget counted its prompt or asked its ledger: never sent.
            await self.afail(cancelled)
            raise

    def _refused(self, refusal: BudgetExceededError) -> None:
        self._ended = True
        self._end_refused(refusal)
        if self.request is not None:
            self.request.refused(refusal)
        # Retries must not send a refused call again: LiteLLM's Router and SDK retry no
        # error that says it was already given its retries.
        refusal.num_retries = 0  # type: ignore[attr-defined]

    def max_cost(self) -> float | None:
        """The most this call can cost, for budgets that reserve it before it is sent; counted
        once, however many budgets ask."""
        if self._max_cost is _NOT_YET:
            self._max_cost = _worst_case(self)
        return self._max_cost  # type: ignore[return-value]

    async def amax_cost(self) -> float | None:
        """``max_cost`` for an async call: a long prompt is counted in a worker thread, so that
        the event loop goes on meanwhile; a short one inline, which costs the loop less."""
        if self._max_cost is not _NOT_YET or prompt_chars(self.params) <= INLINE_CHARS:
            return self.max_cost()
        return await asyncio.to_thread(self.max_cost)

    def _tell_failed(self) -> None:
        for budget in self.budgets:
            with _RELEASING:
                budget.call_failed(self.attributes, self)

    async def _atell_failed(self) -> None:
        for budget in self.budgets:
            with _RELEASING:
                await budget.acall_failed(self.attributes, self)

    @Guard("recording a refused call")
    def _end_refused(self, refusal: BudgetExceededError) -> None:
        self.span.set_attribute(sc.ERROR_TYPE, _attributes.error_type(refusal))
        self.span.set_status(Status(StatusCode.ERROR, str(refusal)))
        self.span.end()

    # --- endings --------------------------------------------------------------------------
    def fail(self, error: BaseException) -> None:
        if self._failing(error):
            self._tell_failed()

    async def afail(self, error: BaseException) -> None:
        if self._failing(error):
            await self._atell_failed()

    def _failing(self, error: BaseException) -> bool:
        """End the span as failed; whether the budgets are still to hear of it."""
        self.deactivate()
        if self._ended:
            return False
        self._ended = True
        self._record_failure(error)
        if self.request is not None:
            with _ENDING_ATTEMPT:
                self.request.attempt_ended(self, None)
        return bool(self.budgets)

    @_RECORDING_FAILURE
    def _record_failure(self, error: BaseException) -> None:
        duration = time.perf_counter() - self.started
        self._mark_failed(error)
        self.span.end()
        if self.traced:
            self.telemetry.instruments.duration.record(
                duration, self._duration_attributes(error), context=self.context
            )

    def _duration_attributes(self, error: BaseException | None) -> Mapping[str, Any]:
        if error is None:
            return self.info.base
        return {**self.info.base, sc.ERROR_TYPE: _attributes.error_type(error)}

    def succeed(self, response: Any) -> None:
        """Finish a plain (not streamed) call; raises ``BudgetExceededError`` if it asked to."""
        if not self._ended:
            self.finish(self._outcome(response))

    async def asucceed(self, response: Any) -> None:
        if not self._ended:
            await self.afinish(self._outcome(response))

    def _outcome(self, response: Any) -> Outcome:
        self._ended = True
        try:
            usage = token_usage(field(response, "usage"))
        except Exception as error:
            _READING_USAGE.failed(error)
            usage = None
        try:
            found = _attributes.plain_response_attributes(response, self.telemetry.capture_content)
        except Exception as error:
            _READING_RESPONSE.failed(error)
            found = None
        return Outcome(usage, False, found, response)

    def finish(self, outcome: Outcome, pricing: Priced | None = None) -> None:
        """Price (unless ``pricing`` is the outcome's price already), annotate and end the
        span, record metrics, tell budgets. Budgets may raise."""
        if self.nested and self._answered_by_nested_call(outcome.response):
            self.end_as_request()
            self._tell_failed()
            return
        pricing = pricing or self.priced(outcome)
        exceeded = None
        if self.budgets:
            # Budgets hear of the call while its span is open, so a threshold event lands on
            # it; a budget's error reaches the caller only once the span is ended and exported.
            token = self._current_for_budgets()
            try:
                exceeded = self._tell_budgets(pricing.total, outcome.response)
            finally:
                if token is not None:
                    otel_context.detach(token)
        self._close(outcome, pricing, exceeded)

    async def afinish(self, outcome: Outcome, pricing: Priced | None = None) -> None:
        if self.nested and self._answered_by_nested_call(outcome.response):
            self.end_as_request()
            await self._atell_failed()
            return
        pricing = pricing or self.priced(outcome)
        exceeded = None
        if self.budgets:
            token = self._current_for_budgets()
            try:
                exceeded = await self._atell_budgets(pricing.total, outcome.response)
            finally:
                if token is not None:
                    otel_context.detach(token)
        self._close(outcome, pricing, exceeded)

    def priced(self, outcome: Outcome) -> Priced:
        """Price the outcome and put it on the span (any thread: a stream's may be priced in a
        worker); the call counts as ended from here."""
        self._ended = True
        priced = outcome.response if outcome.priced is None else outcome.priced
        duration = time.perf_counter() - self.started
        try:
            pricing = self.telemetry.price(self, priced, outcome.usage, duration, outcome.stream)
        except Exception as error:
            _PRICING.failed(error)
            pricing = UNPRICED
        if outcome.estimated and pricing.status == sc.PRICING_PRICED:
            pricing = pricing._replace(status=sc.PRICING_ESTIMATED)
        if self.span.is_recording():
            try:
                self._annotate(outcome, pricing)
            except Exception as error:
                _ANNOTATING.failed(error)
        if outcome.error is not None:
            self._mark_failed(outcome.error)
        return pricing

    @_RECORDING_FAILURE
    def _mark_failed(self, error: BaseException) -> None:
        self.span.set_attribute(sc.ERROR_TYPE, _attributes.error_type(error))
        self.span.set_status(
            Status(StatusCode.ERROR, _attributes.error_description(error, self.params))
        )

    def _close(
        self, outcome: Outcome, pricing: Priced, exceeded: BudgetExceededError | None
    ) -> None:
        duration = time.perf_counter() - self.started
        self.deactivate()
        try:
            self.span.end()
        except Exception as error:
            _ENDING_SPAN.failed(error)
        if self.traced:
            try:
                self._record_metrics(outcome, pricing, duration)
            except Exception as error:
                _RECORDING_METRICS.failed(error)
        if self.parent is not None:
            self.parent.nested.append((outcome.response, pricing.total))
        if self.request is not None:
            with _ENDING_ATTEMPT:
                self.request.attempt_ended(self, pricing.total)
            if exceeded is not None:
                # Raised by the request once it is over: raised here, it would be retried.
                self.request.crossed(exceeded)
                return
        if exceeded is not None:
            raise exceeded

    def _answered_by_nested_call(self, response: Any) -> bool:
        return response is not None and any(answer is response for answer, _ in self.nested)

    def end_as_request(self) -> None:
        """End a call whose answer came from paid calls made inside it (a custom provider that
        called LiteLLM): they carry the cost, so this span carries only their sum, as a
        Router request's span does, and no metric counts it again."""
        self._ended = True
        self.deactivate()
        costs = [cost for _, cost in self.nested if cost is not None]
        if costs and self.span.is_recording():
            self.span.set_attribute(sc.SPENDMETER_REQUEST_COST, math.fsum(costs))
        with _ENDING_SPAN:
            self.span.end()

    def _annotate(self, outcome: Outcome, pricing: Priced) -> None:
        """The span's end attributes, set at once."""
        found: dict[str, Any] = dict(outcome.response_attributes or {})
        if outcome.first_chunk_delay is not None:
            found[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = outcome.first_chunk_delay
        usage = outcome.usage
        if usage is not None:
            add_usage_attributes(found, usage, output=self.info.output_tokens is not None)
        add_pricing_attributes(found, pricing)
        self.span.set_attributes(found)

    def _record_metrics(self, outcome: Outcome, pricing: Priced, duration: float) -> None:
        instruments = self.telemetry.instruments
        info = self.info
        usage, first_chunk_delay, error = outcome.usage, outcome.first_chunk_delay, outcome.error
        # Every point in the call's own context, so that each can carry an exemplar of this
        # span: what links a spike on a dashboard to the calls that made it.
        context = self.context
        instruments.duration.record(duration, self._duration_attributes(error), context=context)
        if first_chunk_delay is not None:
            instruments.time_to_first_chunk.record(first_chunk_delay, info.base, context=context)
        if usage is not None:
            instruments.token_usage.record(usage.input_tokens, info.input_tokens, context=context)
            if info.output_tokens is not None:  # None for an embedding (DESIGN.md 3)
                instruments.token_usage.record(
                    usage.output_tokens, info.output_tokens, context=context
                )
        if pricing.total is not None:
            instruments.cost.add(pricing.total, info.base, context=context)
        else:
            instruments.unpriced_calls.add(1, info.unpriced, context=context)

    def _current_for_budgets(self) -> Token[Context] | None:
        """Make the span current while budgets count the call, so that a threshold event lands
        on it: a plain call is still current here; a stream's span is made current again, in
        the same context the call ran in. The token to detach, if any."""
        return self.attach() if self._active is None else None

    def _tell_budgets(self, cost: float | None, response: Any) -> BudgetExceededError | None:
        """Every budget counts the call; the first that asks to stop the caller is returned."""
        first: BudgetExceededError | None = None
        for budget in self.budgets:
            try:
                budget.after_call(self.attributes, cost, self)
            except BudgetExceededError as exceeded:
                first = first or exceeded
            except Exception as error:
                _COUNTING.failed(error)
        return _carrying(first, response)

    async def _atell_budgets(self, cost: float | None, response: Any) -> BudgetExceededError | None:
        first: BudgetExceededError | None = None
        for budget in self.budgets:
            try:
                await budget.aafter_call(self.attributes, cost, self)
            except BudgetExceededError as exceeded:
                first = first or exceeded
            except Exception as error:
                _COUNTING.failed(error)
        return _carrying(first, response)


class Outcome(NamedTuple):
    """What a finished call brought back, read out of its response or stream."""

    usage: TokenUsage | None
    estimated: bool
    response_attributes: Mapping[str, Any] | None
    response: Any
    # What pricing reads when it is not `response` (a stream's usage chunk), and LiteLLM's
    # stream object.
    priced: Any = None
    stream: Any = None
    first_chunk_delay: float | None = None
    # What ended a stream as failed once chunks had come (the caller's own code, the stream's
    # error, a cancellation): the call still cost what it cost, and its span says it failed.
    error: BaseException | None = None


def _carrying(exceeded: BudgetExceededError | None, response: Any) -> BudgetExceededError | None:
    if exceeded is not None:
        exceeded.response = response  # the caller paid for this response: it travels along
    return exceeded


def add_usage_attributes(found: dict[str, Any], usage: TokenUsage, *, output: bool = True) -> None:
    """Token attributes; ``output=False`` for embeddings, which have no output tokens."""
    found[sc.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
    if output:
        found[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
    if usage.cache_read_tokens:
        found[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
    if usage.cache_write_tokens:
        found[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        found[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens


def add_pricing_attributes(found: dict[str, Any], pricing: Priced) -> None:
    found[sc.SPENDMETER_PRICING_STATUS] = pricing.status
    if pricing.total is None:
        return
    found[sc.GEN_AI_USAGE_COST] = pricing.total
    if pricing.source is not None:
        found[sc.SPENDMETER_PRICING_SOURCE] = pricing.source
    if pricing.model is not None:
        found[sc.SPENDMETER_PRICING_MODEL] = pricing.model
    parts = pricing.parts
    if parts is not None:
        found[sc.SPENDMETER_COST_INPUT] = parts.input
        found[sc.SPENDMETER_COST_OUTPUT] = parts.output
        found[sc.SPENDMETER_COST_CACHE_READ] = parts.cache_read
        found[sc.SPENDMETER_COST_CACHE_WRITE] = parts.cache_write
        found[sc.SPENDMETER_COST_OTHER] = parts.other
