"""A budget governs exactly the calls traced through the provider it was added to."""

from __future__ import annotations

from typing import Any

import litellm
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation

from spendmeter import BudgetExceededError, BudgetSpanProcessor
from tests._support import MESSAGES, FakeProvider, Telemetry

FAKE_MODEL = "fakellm/fake-model"
PRICES = {FAKE_MODEL: {"input_cost_per_token": 1e-3, "output_cost_per_token": 2e-3}}
ONE_CALL = 12 * 1e-3 + 7 * 2e-3  # the fake provider's usage at PRICES


def ask() -> Any:
    return litellm.completion(model=FAKE_MODEL, messages=MESSAGES)


def exceeded_budget() -> BudgetSpanProcessor:
    budget = BudgetSpanProcessor(0.0, raise_on_budget=True, thresholds=(1.0,))
    with pytest.raises(BudgetExceededError):
        budget.after_call({"gen_ai.request.model": FAKE_MODEL}, 0.01, None)  # type: ignore[arg-type]
    assert budget.budget_exceeded
    return budget


def test_a_budget_never_added_to_a_provider_governs_nothing(
    instrument: Any, fake_provider: FakeProvider
) -> None:
    stray = exceeded_budget()
    instrument(pricing=PRICES)

    ask()

    assert fake_provider.requests == 1
    assert stray.request_count == 1  # only the call it was fed by hand above


def test_a_budget_counts_only_its_own_providers_calls(
    make_telemetry: Any, instrument: Any, fake_provider: FakeProvider
) -> None:
    on_a, on_b = make_telemetry(), make_telemetry()
    budget_a, budget_b = BudgetSpanProcessor(1.0), BudgetSpanProcessor(1.0)
    on_a.tracer_provider.add_span_processor(budget_a)
    on_b.tracer_provider.add_span_processor(budget_b)

    instrument(on_a, pricing=PRICES)
    ask()
    ask()
    instrument(on_b, pricing=PRICES)
    ask()

    assert budget_a.request_count == 2
    assert budget_a.total_cost == pytest.approx(2 * ONE_CALL)
    assert budget_b.request_count == 1
    assert budget_b.total_cost == pytest.approx(ONE_CALL)


def test_uninstrument_detaches_an_exceeded_budget(
    instrument: Any, providers: Telemetry, fake_provider: FakeProvider
) -> None:
    providers.tracer_provider.add_span_processor(exceeded_budget())
    instrument(pricing=PRICES)
    with pytest.raises(BudgetExceededError):
        ask()

    instrument(pricing=PRICES)  # uninstrument, then a fresh instrument
    ask()

    assert fake_provider.requests == 1


def test_shutting_down_the_provider_detaches_its_budget(
    instrument: Any, providers: Telemetry, fake_provider: FakeProvider
) -> None:
    budget = exceeded_budget()
    providers.tracer_provider.add_span_processor(budget)
    instrument(pricing=PRICES)

    providers.tracer_provider.shutdown()
    ask()

    assert fake_provider.requests == 1
    assert not budget.governs


def test_suppressed_calls_are_still_counted_and_capped(
    instrument: Any, providers: Telemetry, fake_provider: FakeProvider
) -> None:
    budget = BudgetSpanProcessor(1.5 * ONE_CALL, raise_on_budget=True, thresholds=(1.0,))
    providers.tracer_provider.add_span_processor(budget)
    instrument(pricing=PRICES)

    with suppress_instrumentation():
        ask()
        with pytest.raises(BudgetExceededError) as crossing:
            ask()
        with pytest.raises(BudgetExceededError) as refused:
            ask()

    assert fake_provider.requests == 2
    assert budget.total_cost == pytest.approx(2 * ONE_CALL)
    assert crossing.value.response is not None
    assert refused.value.response is None


async def test_an_async_call_is_counted_by_its_providers_budget(
    instrument: Any, providers: Telemetry, fake_provider: FakeProvider
) -> None:
    budget = BudgetSpanProcessor(1.0)
    providers.tracer_provider.add_span_processor(budget)
    instrument(pricing=PRICES)

    await litellm.acompletion(model=FAKE_MODEL, messages=MESSAGES)

    assert budget.request_count == 1
    assert budget.total_cost == pytest.approx(ONE_CALL)
