"""A budget governs exactly the calls traced through the provider it was added to."""

from __future__ import annotations

from typing import Any

import litellm
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation

from spendmeter import BudgetExceededError, BudgetSpanProcessor
from tests._support import (
    FAKE_MODEL,
    FAKE_PRICES,
    MESSAGES,
    FakeProvider,
    Telemetry,
    ask_fake,
    exceeded_budget,
    fake_call_cost,
)

ONE_CALL = fake_call_cost()  # the fake provider's usage at FAKE_PRICES


def test_a_budget_never_added_to_a_provider_governs_nothing(
    instrument: Any, fake_provider: FakeProvider
) -> None:
    stray = exceeded_budget()
    instrument(pricing=FAKE_PRICES)

    ask_fake()

    assert fake_provider.requests == 1
    assert stray.request_count == 1  # only the call it was fed by hand above


def test_a_budget_counts_only_its_own_providers_calls(
    make_telemetry: Any, instrument: Any, fake_provider: FakeProvider
) -> None:
    on_a, on_b = make_telemetry(), make_telemetry()
    budget_a, budget_b = BudgetSpanProcessor(1.0), BudgetSpanProcessor(1.0)
    on_a.tracer_provider.add_span_processor(budget_a)
    on_b.tracer_provider.add_span_processor(budget_b)

    instrument(on_a, pricing=FAKE_PRICES)
    ask_fake()
    ask_fake()
    instrument(on_b, pricing=FAKE_PRICES)
    ask_fake()

    assert budget_a.request_count == 2
    assert budget_a.total_cost == pytest.approx(2 * ONE_CALL)
    assert budget_b.request_count == 1
    assert budget_b.total_cost == pytest.approx(ONE_CALL)


def test_uninstrument_detaches_an_exceeded_budget(
    instrument: Any, providers: Telemetry, fake_provider: FakeProvider
) -> None:
    providers.tracer_provider.add_span_processor(exceeded_budget())
    instrument(pricing=FAKE_PRICES)
    with pytest.raises(BudgetExceededError):
        ask_fake()

    instrument(pricing=FAKE_PRICES)  # uninstrument, then a fresh instrument
    ask_fake()

    assert fake_provider.requests == 1


def test_shutting_down_the_provider_detaches_its_budget(
    instrument: Any, providers: Telemetry, fake_provider: FakeProvider
) -> None:
    budget = exceeded_budget()
    providers.tracer_provider.add_span_processor(budget)
    instrument(pricing=FAKE_PRICES)

    providers.tracer_provider.shutdown()
    ask_fake()

    assert fake_provider.requests == 1
    assert not budget.governs


def test_suppressed_calls_are_still_counted_and_capped(
    instrument: Any, providers: Telemetry, fake_provider: FakeProvider
) -> None:
    budget = BudgetSpanProcessor(1.5 * ONE_CALL, raise_on_budget=True, thresholds=(1.0,))
    providers.tracer_provider.add_span_processor(budget)
    instrument(pricing=FAKE_PRICES)

    with suppress_instrumentation():
        ask_fake()
        with pytest.raises(BudgetExceededError) as crossing:
            ask_fake()
        with pytest.raises(BudgetExceededError) as refused:
            ask_fake()

    assert fake_provider.requests == 2
    assert budget.total_cost == pytest.approx(2 * ONE_CALL)
    assert crossing.value.response is not None
    assert refused.value.response is None


async def test_an_async_call_is_counted_by_its_providers_budget(
    instrument: Any, providers: Telemetry, fake_provider: FakeProvider
) -> None:
    budget = BudgetSpanProcessor(1.0)
    providers.tracer_provider.add_span_processor(budget)
    instrument(pricing=FAKE_PRICES)

    await litellm.acompletion(model=FAKE_MODEL, messages=MESSAGES)

    assert budget.request_count == 1
    assert budget.total_cost == pytest.approx(ONE_CALL)
