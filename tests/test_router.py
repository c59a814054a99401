"""Requests sent as several attempts: litellm.Router (retries, fallbacks) and
``completion_with_retries``. One request span over one span per attempt, each attempt priced as
the deployment that served it; a budget's word is final for the whole request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from litellm import CustomLLM, ModelResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from spendmeter import BudgetExceededError, BudgetSpanProcessor
from spendmeter import semconv as sc
from tests._support import MESSAGES, Telemetry, answer, registered_provider

PRICES = {
    "fakellm/flaky": {"input_cost_per_token": 1e-3, "output_cost_per_token": 1e-3},
    "fakellm/steady": {"input_cost_per_token": 2e-3, "output_cost_per_token": 2e-3},
}
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
STEADY_COST = 15 * 2e-3


class Deployments(CustomLLM):
    """Two fake deployments: ``fakellm/flaky`` fails its first ``failures`` requests with a
    server error (which the Router retries), ``fakellm/steady`` always answers."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.requests: list[str] = []

    def _answer(self, model: str) -> ModelResponse:
        self.requests.append(model)
        if "flaky" in model and self.failures > 0:
            self.failures -= 1
            raise litellm.InternalServerError(message="boom", llm_provider="fakellm", model=model)
        return answer(model, USAGE, id=f"answer-{len(self.requests)}")

    def completion(self, model: str, *args: Any, **kwargs: Any) -> ModelResponse:
        return self._answer(model)

    async def acompletion(self, model: str, *args: Any, **kwargs: Any) -> ModelResponse:
        return self._answer(model)


@pytest.fixture
def deployments() -> Iterator[Deployments]:
    provider = Deployments()
    with registered_provider("fakellm", provider):
        yield provider


@pytest.fixture
def priced(instrument: Any) -> Telemetry:
    return instrument(pricing=PRICES)


def router(**options: Any) -> litellm.Router:
    return litellm.Router(
        model_list=[
            {"model_name": "primary", "litellm_params": {"model": "fakellm/flaky"}},
            {"model_name": "backup", "litellm_params": {"model": "fakellm/steady"}},
        ],
        fallbacks=[{"primary": ["backup"]}],
        **options,
    )


def tree(telemetry: Telemetry) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The request span and its attempts, in the order they started."""
    spans = telemetry.spans()
    [request] = [s for s in spans if s.parent is None]
    attempts = sorted((s for s in spans if s.parent is not None), key=lambda s: s.start_time or 0)
    assert all(s.parent and s.parent.span_id == request.context.span_id for s in attempts)
    return request, attempts


def add_budget(telemetry: Telemetry, budget: float, **options: Any) -> BudgetSpanProcessor:
    processor = BudgetSpanProcessor(budget, raise_on_budget=True, thresholds=(1.0,), **options)
    telemetry.tracer_provider.add_span_processor(processor)
    return processor


@pytest.mark.parametrize("is_async", [False, True], ids=["completion", "acompletion"])
async def test_retries_and_a_fallback_make_one_request_span_over_each_attempt(
    is_async: bool, priced: Telemetry, deployments: Deployments
) -> None:
    deployments.failures = 2  # the first try and its one retry fail, the fallback answers
    group = router(num_retries=1)
    if is_async:
        await group.acompletion(model="primary", messages=MESSAGES)
    else:
        group.completion(model="primary", messages=MESSAGES)

    request, attempts = tree(priced)
    assert deployments.requests == ["flaky", "flaky", "steady"]
    assert request.name == "chat primary"
    assert request.kind is SpanKind.INTERNAL
    assert request.attributes[sc.GEN_AI_REQUEST_MODEL] == "primary"
    assert request.attributes[sc.SPENDMETER_REQUEST_COST] == pytest.approx(STEADY_COST)
    assert sc.GEN_AI_USAGE_COST not in request.attributes  # counted once, on the attempts
    assert request.status.status_code is not StatusCode.ERROR

    assert [a.attributes[sc.SPENDMETER_ROUTER_ATTEMPT] for a in attempts] == [1, 2, 3]
    assert [a.attributes[sc.SPENDMETER_ROUTER_MODEL_GROUP] for a in attempts] == [
        "primary",
        "primary",
        "backup",
    ]
    failed, retried, served = attempts
    for attempt in (failed, retried):
        assert attempt.status.status_code is StatusCode.ERROR
        assert attempt.attributes[sc.ERROR_TYPE] == "InternalServerError"
        assert sc.GEN_AI_USAGE_COST not in attempt.attributes
    assert served.name == "chat fakellm/steady"
    assert served.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(STEADY_COST)
    assert priced.metric_sum(sc.METRIC_COST) == pytest.approx(STEADY_COST)


async def test_the_crossing_router_call_keeps_its_response_and_is_not_sent_again(
    priced: Telemetry, deployments: Deployments
) -> None:
    budget = add_budget(priced, STEADY_COST / 2)
    group = router(num_retries=2)

    with pytest.raises(BudgetExceededError) as crossed:
        await group.acompletion(model="backup", messages=MESSAGES)

    assert deployments.requests == ["steady"]  # neither retried nor sent to a fallback
    assert crossed.value.response is not None
    assert crossed.value.response.choices[0].message.content == "ok"
    assert budget.total_cost == pytest.approx(STEADY_COST)
    request, [attempt] = tree(priced)
    assert attempt.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(STEADY_COST)
    assert request.attributes[sc.ERROR_TYPE] == "BudgetExceededError"


async def test_a_router_request_past_the_budget_is_refused_before_any_attempt(
    priced: Telemetry, deployments: Deployments
) -> None:
    add_budget(priced, STEADY_COST / 2)
    group = router(num_retries=2)
    with pytest.raises(BudgetExceededError):
        await group.acompletion(model="backup", messages=MESSAGES)
    priced.exporter.clear()

    with pytest.raises(BudgetExceededError) as refused:
        await group.acompletion(model="primary", messages=MESSAGES)

    assert refused.value.response is None
    assert deployments.requests == ["steady"]
    [request] = priced.spans()  # no attempt was made
    assert request.name == "chat primary"
    assert request.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("is_async", [False, True], ids=["completion", "acompletion"])
async def test_an_attempt_refused_by_a_reserving_budget_is_neither_retried_nor_sent_elsewhere(
    is_async: bool, priced: Telemetry, deployments: Deployments
) -> None:
    # 1,000 output tokens at $0.001 cannot fit in $0.50: refused before it is sent.
    add_budget(priced, 0.5, reserve=True)
    group = router(num_retries=2)

    with pytest.raises(BudgetExceededError, match="refused"):
        call = (group.acompletion if is_async else group.completion)(
            model="primary", messages=MESSAGES, max_tokens=1000
        )
        if asyncio.iscoroutine(call):
            await call

    assert deployments.requests == []
    request, [attempt] = tree(priced)
    assert attempt.attributes[sc.ERROR_TYPE] == "BudgetExceededError"
    assert request.attributes[sc.ERROR_TYPE] == "BudgetExceededError"


def test_completion_with_retries_is_one_request_over_its_attempts(
    priced: Telemetry, deployments: Deployments
) -> None:
    deployments.failures = 1

    litellm.completion_with_retries(model="fakellm/flaky", messages=MESSAGES, num_retries=3)

    request, attempts = tree(priced)
    assert deployments.requests == ["flaky", "flaky"]
    assert request.name == "chat fakellm/flaky"
    assert [a.status.status_code is StatusCode.ERROR for a in attempts] == [True, False]
    cost = 15 * 1e-3
    assert attempts[1].attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(cost)
    assert request.attributes[sc.SPENDMETER_REQUEST_COST] == pytest.approx(cost)
    assert priced.metric_sum(sc.METRIC_COST) == pytest.approx(cost)


def test_completion_with_retries_does_not_resend_a_refused_call(
    priced: Telemetry, deployments: Deployments
) -> None:
    add_budget(priced, 0.5, reserve=True)

    with pytest.raises(BudgetExceededError):
        litellm.completion_with_retries(
            model="fakellm/flaky", messages=MESSAGES, max_tokens=1000, num_retries=3
        )

    assert deployments.requests == []
    _request, attempts = tree(priced)
    assert len(attempts) == 1


class Delegating(CustomLLM):
    """A custom provider that answers by calling LiteLLM for a real (mocked) model."""

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        return litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="hi")

    async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
        return await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="hi")


@pytest.mark.parametrize("is_async", [False, True], ids=["completion", "acompletion"])
async def test_a_paid_call_made_inside_a_custom_provider_is_its_own_call(
    is_async: bool, telemetry: Telemetry
) -> None:
    with registered_provider("delegating", Delegating()):
        if is_async:
            response = await litellm.acompletion(model="delegating/any", messages=MESSAGES)
        else:
            response = litellm.completion(model="delegating/any", messages=MESSAGES)

    spans = telemetry.spans()
    [inner] = [s for s in spans if s.name == "chat gpt-4o-mini"]
    [outer] = [s for s in spans if s.name == "chat delegating/any"]
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    cost = response._hidden_params["response_cost"]
    assert inner.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(cost)
    # The cost is the inner call's: counted there once, not again on the outer span.
    assert sc.GEN_AI_USAGE_COST not in outer.attributes
    assert outer.attributes[sc.SPENDMETER_REQUEST_COST] == pytest.approx(cost)
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(cost)


async def test_a_streamed_router_request_ends_with_its_stream(telemetry: Telemetry) -> None:
    group = litellm.Router(
        model_list=[
            {
                "model_name": "mini",
                "litellm_params": {"model": "gpt-4o-mini", "mock_response": "hi"},
            }
        ]
    )
    stream = await group.acompletion(
        model="mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert telemetry.spans() == []  # neither span ends before the stream does
    async for _chunk in stream:
        pass

    request, [attempt] = tree(telemetry)
    assert attempt.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    cost = attempt.attributes[sc.GEN_AI_USAGE_COST]
    assert cost > 0
    assert request.attributes[sc.SPENDMETER_REQUEST_COST] == pytest.approx(cost)
