"""One request that LiteLLM sends as several attempts: a Router request, or a call made
through ``completion_with_retries``.

The request is one span (``gen_ai.request.model`` = the model group) over one span per
attempt. Each attempt is an ordinary call, priced as the deployment that served it: cost is
counted once, on the attempts. The request span carries their sum only as
``spendmeter.request.cost``, so that a backend summing ``gen_ai.usage.cost`` over spans counts
each paid call once.

A budget's word is final for the whole request. A call refused before it is sent is not sent
again by a retry or a fallback; and the attempt that crosses a budget hands its response back
to the Router (raised there, the Router would retry it and pay again), and the request raises
``BudgetExceededError`` with that response once the Router returns it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from spendmeter import _attributes
from spendmeter import semconv as sc
from spendmeter._call import Call, Telemetry, new_call_id, read_request
from spendmeter._guard import Guard
from spendmeter.errors import BudgetExceededError

# The request whose attempts are being made now; a call started inside one is its attempt.
CURRENT_REQUEST: ContextVar[Request | None] = ContextVar("spendmeter_request", default=None)


class Request:
    """One request, its span, and what its attempts cost and what budgets said of them."""

    def __init__(
        self,
        telemetry: Telemetry,
        operation: str,
        params: Mapping[str, Any],
        *,
        router: bool,
        traced: bool,
    ) -> None:
        self.telemetry = telemetry
        self.router = router
        self.params = params
        self.group = _model_name(params.get("model"))
        self.attempts = 0
        self.costs: list[float] = []
        self.provider: str | None = None
        self.refusal: BudgetExceededError | None = None
        self.crossing: BudgetExceededError | None = None
        self.open_streams = 0
        self.returned = False
        self.ended = False
        self._token: Token[Context] | None = None
        self.budgets = telemetry.budgets()
        self.call_id = new_call_id()  # the spend feed's contract: unique across the fleet
        self.attributes = {
            sc.GEN_AI_OPERATION_NAME: operation,
            sc.GEN_AI_REQUEST_MODEL: self.group,
            sc.GEN_AI_REQUEST_STREAM: params.get("stream") is True,
            **(read_request(params, telemetry.metadata_keys, False) or {}),
        }
        self.span: Span = (
            telemetry.tracer.start_span(
                f"{operation} {self.group}", kind=SpanKind.INTERNAL, attributes=self.attributes
            )
            if traced
            else INVALID_SPAN
        )

    # --- what a budget asks of a call (spendmeter._listeners.CallRequest) -----------------
    def max_cost(self) -> float | None:
        return None  # the request holds nothing back: each attempt reserves its own cost

    async def amax_cost(self) -> float | None:
        return None

    # --- running ----------------------------------------------------------------------------
    def __enter__(self) -> Request:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        self._request = CURRENT_REQUEST.set(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        CURRENT_REQUEST.reset(self._request)
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None

    def admit(self) -> None:
        """Refuse the whole request, before the Router picks a deployment, if a budget is
        already exceeded."""
        try:
            for budget in self.budgets:
                budget.before_call(self.attributes, self)
        except BudgetExceededError as refusal:
            self.fail(refusal)
            raise

    async def aadmit(self) -> None:
        try:
            for budget in self.budgets:
                await budget.abefore_call(self.attributes, self)
        except BudgetExceededError as refusal:
            self.fail(refusal)
            raise

    # --- what its attempts tell it (spendmeter._call.RequestLike) --------------------------
    def attempt_attributes(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        self.attempts += 1
        found: dict[str, Any] = {sc.SPENDMETER_ROUTER_ATTEMPT: self.attempts}
        if self.router:
            found[sc.SPENDMETER_ROUTER_MODEL_GROUP] = _attempt_group(params) or self.group
        if params.get("stream") is True:
            self.open_streams += 1
        return found

    def attempt_ended(self, call: Call, cost: float | None) -> None:
        if cost is not None:
            self.costs.append(cost)
        self.provider = call.info.base[sc.GEN_AI_PROVIDER_NAME]
        if call.params.get("stream") is True:
            self.open_streams -= 1
            if self.returned and self.open_streams <= 0:
                self._end(None)  # a streamed request ends with its stream

    def crossed(self, exceeded: BudgetExceededError) -> None:
        self.crossing = self.crossing or exceeded

    def refused(self, refusal: BudgetExceededError) -> None:
        self.refusal = self.refusal or refusal

    # --- endings ----------------------------------------------------------------------------
    def succeed(self, result: Any) -> Any:
        """The Router's answer: handed back, or raised with a budget's error if an attempt
        crossed it. A stream's request span ends when the stream does."""
        self.returned = True
        crossing = self.crossing
        if self.open_streams <= 0:
            self._end(crossing)  # the caller's outcome: the budget's error, if one was crossed
        if crossing is not None:
            crossing.response = result
            raise crossing
        return result

    def fail(self, error: BaseException) -> BaseException:
        """End the request as failed; the error the caller gets: a budget's refusal, when one
        stopped an attempt, rather than whatever the Router made of it."""
        final = self.refusal or error
        self._end(final)
        return final

    def _end(self, error: BaseException | None) -> None:
        if self.ended:
            return
        self.ended = True
        self._record_end(error)

    @Guard("ending a request")
    def _record_end(self, error: BaseException | None) -> None:
        span = self.span
        if span.is_recording():
            if self.provider is not None:
                span.set_attribute(sc.GEN_AI_PROVIDER_NAME, self.provider)
            if self.costs:
                span.set_attribute(sc.SPENDMETER_REQUEST_COST, math.fsum(self.costs))
            if error is not None:
                span.set_attribute(sc.ERROR_TYPE, _attributes.error_type(error))
                description = _attributes.error_description(error, self.params)
                span.set_status(Status(StatusCode.ERROR, description))
        span.end()


def _model_name(model: Any) -> str:
    return model if isinstance(model, str) and model else "unknown"


def _attempt_group(params: Mapping[str, Any]) -> str | None:
    """The model group the Router sent this attempt to (a fallback's group on a fallback)."""
    for key in ("metadata", "litellm_metadata"):
        metadata = params.get(key)
        if isinstance(metadata, Mapping):
            group = metadata.get("model_group")
            if isinstance(group, str) and group:
                return group
    return None
