"""One call's lifecycle, shared by the sync and async wrappers.

``Telemetry`` holds what lives for the whole instrumentation (tracer, instruments, prices,
settings, per-model caches). ``Call`` is one LLM call: it starts the span, and finishes it once
with the response or the error, recording metrics and telling budgets what the call cost.

The user's call is sacred: every telemetry step runs under ``guarded`` so that a fault inside
spendmeter is logged and swallowed. Only ``BudgetExceededError`` crosses into the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from spendmeter import _attributes, _listeners
from spendmeter import semconv as sc
from spendmeter._estimate import worst_case_cost
from spendmeter._usage import TokenUsage, token_usage
from spendmeter.errors import BudgetExceededError
from spendmeter.metrics import Instruments
from spendmeter.pricing import UNPRICED, Priced, Pricer

logger = logging.getLogger("spendmeter")

# Per-model caches start afresh past this many entries: an app that calls thousands of
# distinct model names (fine-tunes, deployments) must not grow memory without bound.
MAX_CACHED_MODELS = 1024

# Set while a spendmeter-wrapped call runs, so LiteLLM calling itself (acompletion runs
# completion inside) makes one span per user call, not two.
_IN_CALL: ContextVar[bool] = ContextVar("spendmeter_in_call", default=False)


def should_trace() -> bool:
    return not _IN_CALL.get() and is_instrumentation_enabled()


def guarded(step: str, func: Callable[..., Any], *args: Any) -> Any:
    """Run one telemetry step; log and swallow its faults, except a budget's refusal."""
    try:
        return func(*args)
    except BudgetExceededError:
        raise
    except Exception:
        logger.exception("spendmeter: %s failed; the LLM call is unaffected", step)
        return None


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
    output_tokens: Mapping[str, Any]
    unpriced: Mapping[str, Any]  # model + provider


class Telemetry:
    def __init__(
        self,
        tracer: Tracer,
        instruments: Instruments,
        pricer: Pricer,
        *,
        metadata_keys: tuple[str, ...] = (),
        capture_content: bool = False,
    ) -> None:
        self.tracer = tracer
        self.instruments = instruments
        self.pricer = pricer
        self.metadata_keys = metadata_keys
        self.capture_content = capture_content
        self._models: dict[tuple[Any, ...], ModelInfo] = {}
        self._warned_unpriced: set[str] = set()

    # --- per-model cache ------------------------------------------------------------------
    def model_info(self, operation: str, params: Mapping[str, Any]) -> ModelInfo:
        model = params.get("model")
        custom_provider = params.get("custom_llm_provider")
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
        return ModelInfo(
            model=model_name,
            provider=provider,
            span_name=f"{operation} {model_name}",
            base=base,
            start=(
                {**base, sc.GEN_AI_REQUEST_STREAM: False},
                {**base, sc.GEN_AI_REQUEST_STREAM: True},
            ),
            input_tokens={**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT},
            output_tokens={**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT},
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
            call.call_type,
            info.model,
            info.provider,
            call.params,
            response,
            duration_s,
            usage=usage,
            stream=stream,
        )
        if priced.total is None:
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
    def begin(self, operation: _attributes.Operation, args: tuple, kwargs: Mapping) -> Call:
        params = operation.bind(args, kwargs)
        info = self.model_info(operation.name, params)
        # Shared, never mutated: the SDK copies span attributes, budgets only read them.
        attributes = info.start[params.get("stream") is True]
        optional = guarded(
            "reading the request",
            _attributes.request_attributes,
            params,
            self.metadata_keys,
            self.capture_content,
        )
        if optional:
            attributes = {**attributes, **optional}
        return Call(self, info, params, attributes, operation.function)


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


def response_usage(response: Any) -> TokenUsage | None:
    return token_usage(_attributes.field(response, "usage"))


class Call:
    """One LLM call's span and measurements; finished exactly once."""

    __slots__ = (
        "_active",
        "_ended",
        "_in_call",
        "attributes",
        "call_type",
        "info",
        "params",
        "span",
        "started",
        "telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        info: ModelInfo,
        params: Mapping,
        attributes: dict,
        call_type: str = "completion",
    ) -> None:
        self.telemetry = telemetry
        self.call_type = call_type  # the LiteLLM function called: what LiteLLM prices it as
        self.info = info
        self.params = params
        self.attributes = attributes
        self._ended = False
        self._active: object | None = None  # the context token while the span is current
        self.span = telemetry.tracer.start_span(
            info.span_name, kind=SpanKind.CLIENT, attributes=attributes
        )
        self.started = time.perf_counter()

    def __enter__(self) -> Call:
        """The call runs: its span current, LiteLLM's calls inside it not traced again."""
        self._in_call = _IN_CALL.set(True)
        self.activate()
        return self

    def __exit__(self, error_type: Any, error: BaseException | None, traceback: Any) -> None:
        _IN_CALL.reset(self._in_call)
        if error is not None:
            self.fail(error)  # also makes the span no longer current

    def activate(self) -> None:
        self._active = otel_context.attach(trace.set_span_in_context(self.span))

    def deactivate(self) -> None:
        """Make the span no longer current; a no-op once done."""
        token = self._active
        if token is not None:
            self._active = None
            otel_context.detach(token)

    def admit(self) -> None:
        """Ask every budget whether this call may go out; a refusal ends the span as failed."""
        try:
            for listener in _listeners.listeners():
                listener.before_call(self.attributes, self)
        except BudgetExceededError as refusal:
            self._ended = True
            self._tell_failed()  # budgets that admitted it first release what they held
            guarded("recording a refused call", self._end_refused, refusal)
            raise
        except Exception:
            logger.exception("spendmeter: a budget check failed; the call goes ahead")

    def max_cost(self) -> float | None:
        """The most this call can cost, for budgets that reserve it before it is sent."""
        info = self.info
        operation = info.base[sc.GEN_AI_OPERATION_NAME]
        return guarded(
            "estimating a call's cost",
            worst_case_cost,
            self.telemetry.pricer,
            info.model,
            info.provider,
            operation,
            self.params,
        )

    def is_embedding(self) -> bool:
        return self.info.base[sc.GEN_AI_OPERATION_NAME] == sc.OPERATION_EMBEDDINGS

    def _tell_failed(self) -> None:
        for listener in _listeners.listeners():
            guarded("releasing a reservation", listener.call_failed, self.attributes, self)

    def _end_refused(self, refusal: BudgetExceededError) -> None:
        self.span.set_attribute(sc.ERROR_TYPE, _attributes.error_type(refusal))
        self.span.set_status(Status(StatusCode.ERROR, str(refusal)))
        self.span.end()

    # --- endings --------------------------------------------------------------------------
    def fail(self, error: BaseException) -> None:
        self.deactivate()
        if self._ended:
            return
        self._ended = True
        self._tell_failed()
        guarded("recording a failed call", self._record_failure, error)

    def _record_failure(self, error: BaseException) -> None:
        kind = _attributes.error_type(error)
        duration = time.perf_counter() - self.started
        self.span.set_attribute(sc.ERROR_TYPE, kind)
        self.span.set_status(Status(StatusCode.ERROR, str(error)))
        self.span.end()
        self.telemetry.instruments.duration.record(
            duration, {**self.info.base, sc.ERROR_TYPE: kind}
        )

    def succeed(self, response: Any) -> None:
        """Finish a plain (not streamed) call; raises ``BudgetExceededError`` if it asked to."""
        if self._ended:
            return
        self._ended = True
        self.finish(
            usage=guarded("reading usage", response_usage, response),
            estimated=False,
            response_attributes=guarded(
                "reading the response",
                _attributes.response_attributes,
                response,
                self.telemetry.capture_content,
            ),
            response=response,
        )

    def finish(
        self,
        *,
        usage: TokenUsage | None,
        estimated: bool,
        response_attributes: Mapping[str, Any] | None,
        response: Any,
        priced: Any = None,
        stream: Any = None,
        first_chunk_delay: float | None = None,
    ) -> None:
        """Price, annotate and end the span, record metrics, tell budgets. Budgets may raise.

        ``priced`` is what pricing reads when it is not ``response`` (a stream's usage chunk or
        assembled response), ``stream`` LiteLLM's stream object.
        """
        self._ended = True
        duration = time.perf_counter() - self.started
        pricing = guarded(
            "pricing",
            self.telemetry.price,
            self,
            response if priced is None else priced,
            usage,
            duration,
            stream,
        )
        pricing = pricing or UNPRICED
        if estimated and pricing.status == sc.PRICING_PRICED:
            pricing = pricing._replace(status=sc.PRICING_ESTIMATED)
        guarded(
            "annotating the span",
            self._annotate,
            usage,
            pricing,
            response_attributes,
            first_chunk_delay,
        )
        # Budgets hear of the call while its span is open, so a threshold event lands on it;
        # a budget's error reaches the caller only once the span is ended and exported.
        exceeded = self._tell_budgets(pricing.total, response)
        self.deactivate()
        guarded("ending the span", self.span.end)
        guarded(
            "recording metrics", self._record_metrics, usage, pricing, duration, first_chunk_delay
        )
        if exceeded is not None:
            raise exceeded

    def _annotate(
        self,
        usage: TokenUsage | None,
        pricing: Priced,
        response_attributes: Mapping[str, Any] | None,
        first_chunk_delay: float | None,
    ) -> None:
        span = self.span
        if not span.is_recording():
            return
        found: dict[str, Any] = dict(response_attributes or {})
        if first_chunk_delay is not None:
            found[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = first_chunk_delay
        if usage is not None:
            add_usage_attributes(found, usage, output=not self.is_embedding())
        add_pricing_attributes(found, pricing)
        span.set_attributes(found)

    def _record_metrics(
        self,
        usage: TokenUsage | None,
        pricing: Priced,
        duration: float,
        first_chunk_delay: float | None,
    ) -> None:
        instruments = self.telemetry.instruments
        info = self.info
        instruments.duration.record(duration, info.base)
        if first_chunk_delay is not None:
            instruments.time_to_first_chunk.record(first_chunk_delay, info.base)
        if usage is not None:
            instruments.token_usage.record(usage.input_tokens, info.input_tokens)
            if not self.is_embedding():  # an embedding has no output tokens (DESIGN.md 3)
                instruments.token_usage.record(usage.output_tokens, info.output_tokens)
        if pricing.total is not None:
            # In the span's context, so the cost point can carry an exemplar with its trace:
            # what links a spike on a dashboard to the calls that made it.
            instruments.cost.add(
                pricing.total, info.base, context=trace.set_span_in_context(self.span)
            )
        else:
            instruments.unpriced_calls.add(1, info.unpriced)

    def _tell_budgets(self, cost: float | None, response: Any) -> BudgetExceededError | None:
        """Every budget counts the call; the first that asks to stop the caller is returned."""
        listeners = _listeners.listeners()
        if not listeners:
            return None
        first: BudgetExceededError | None = None
        # The span is current while budgets count the call, so that a threshold event lands
        # on it: a plain call finishes before its span stops being current; a stream's span
        # is made current again here.
        token = None
        if self._active is None:
            token = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            for listener in listeners:
                try:
                    listener.after_call(self.attributes, cost, self)
                except BudgetExceededError as exceeded:
                    first = first or exceeded
                except Exception:
                    logger.exception("spendmeter: a budget failed to count a call")
        finally:
            if token is not None:
                otel_context.detach(token)
        if first is not None:
            first.response = response  # the caller paid for this response: it travels along
        return first


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
