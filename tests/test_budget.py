"""BudgetSpanProcessor, driven through the spend feed as the instrumentor drives it."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from spendmeter import BudgetExceededError, BudgetSpanProcessor, _listeners, config
from spendmeter.budget import HISTORY_SIZE
from tests._support import Alerts, Clock, Telemetry

CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
}
# Costs are binary fractions so that sums in any order are exact.
COST = 0.125


def call(processor: BudgetSpanProcessor, cost: float | None = COST, **attributes: Any) -> None:
    """One LLM call as the instrumentor reports it."""
    attributes = {**CHAT, **attributes}
    processor.before_call(attributes)
    processor.after_call(attributes, cost)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.fixture
def make(providers: Telemetry, make_budget: Any) -> Callable[..., BudgetSpanProcessor]:
    """``make_budget``, reporting its gauges to the in-memory metrics."""

    def build(budget: float = 1.0, **kwargs: Any) -> BudgetSpanProcessor:
        kwargs.setdefault("meter_provider", providers.meter_provider)
        processor: BudgetSpanProcessor = make_budget(budget, **kwargs)
        return processor

    return build


def gauge(telemetry: Telemetry, name: str) -> dict[frozenset[tuple[str, Any]], float]:
    points: dict[frozenset[tuple[str, Any]], float] = {}
    for metric in telemetry.metrics(name):
        assert metric.unit == "USD"
        for point in metric.data.data_points:
            points[frozenset(point.attributes.items())] = point.value
    return points


def labels(**attributes: str) -> frozenset[tuple[str, str]]:
    return frozenset((f"spendmeter.budget.{key}", value) for key, value in attributes.items())


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [-0.01, "10", None, True, float("nan"), float("inf")])
def test_a_bad_budget_is_refused_at_construction(budget: Any) -> None:
    with pytest.raises(ValueError, match="budget"):
        BudgetSpanProcessor(budget)


@pytest.mark.parametrize("thresholds", [(0.5, 0.0), (1.2,), (-0.5,), ("0.5",), (True,), "0.5"])
def test_a_threshold_outside_zero_to_one_is_refused(thresholds: Any) -> None:
    with pytest.raises(ValueError, match="threshold"):
        BudgetSpanProcessor(1.0, thresholds=thresholds)


@pytest.mark.parametrize("window", ["week", "Day", "none", ""])
def test_an_unknown_window_is_refused(window: str) -> None:
    with pytest.raises(ValueError, match="window"):
        BudgetSpanProcessor(1.0, window=window)


def test_a_callback_that_cannot_be_called_is_refused() -> None:
    with pytest.raises(TypeError, match="on_threshold"):
        BudgetSpanProcessor(1.0, on_threshold="alert me")  # type: ignore[arg-type]


def test_from_settings_builds_what_the_environment_asks_for() -> None:
    settings = config.from_env(
        {
            "SPENDMETER_BUDGET_USD": "0.25",
            "SPENDMETER_BUDGET_ACTION": "raise",
            "SPENDMETER_BUDGET_THRESHOLDS": "0.9, 0.3",
            "SPENDMETER_BUDGET_WINDOW": "day",
            "SPENDMETER_BUDGET_SCOPE": "user.id",
            "SPENDMETER_BUDGET_NAME": "search-api",
        }
    ).budget
    assert settings is not None
    processor = BudgetSpanProcessor.from_settings(settings)
    try:
        assert processor.budget == 0.25
        assert processor.name == "search-api"
        assert processor.raise_on_budget
        assert processor.thresholds == (0.3, 0.9)
        assert processor.window == "day"
        assert processor.scope == "user.id"
        assert processor.governs
    finally:
        processor.shutdown()


def test_from_settings_without_thresholds_uses_the_defaults(providers: Telemetry) -> None:
    settings = config.from_env({"SPENDMETER_BUDGET_USD": "5"}).budget
    assert settings is not None
    processor = BudgetSpanProcessor.from_settings(settings, meter_provider=providers.meter_provider)
    try:
        assert processor.thresholds == (0.5, 0.8, 1.0)
        assert not processor.raise_on_budget
        assert processor.window is None
        assert processor.scope is None
        assert processor.name == "default"
        assert gauge(providers, "spendmeter.budget.limit") == {labels(name="default"): 5.0}
    finally:
        processor.shutdown()


# --- the ledger -----------------------------------------------------------------------------


def test_totals_count_every_call_and_unpriced_calls_add_no_spend(make: Any) -> None:
    processor = make(10.0)
    call(processor, 0.25)
    call(processor, 0.5, **{"gen_ai.request.model": "claude-3-5-haiku"})
    call(processor, None, **{"gen_ai.request.model": "my-local-model"})

    assert processor.total_cost == 0.75
    assert processor.request_count == 3
    # An unpriced model is absent, never listed as free.
    assert processor.cost_by_model == {"gpt-4o-mini": 0.25, "claude-3-5-haiku": 0.5}
    assert [(r.model, r.cost) for r in processor.history] == [
        ("gpt-4o-mini", 0.25),
        ("claude-3-5-haiku", 0.5),
        ("my-local-model", None),
    ]
    assert not processor.budget_exceeded


def test_history_keeps_only_the_latest_calls(make: Any) -> None:
    processor = make(10_000.0)
    for index in range(HISTORY_SIZE + 5):
        call(processor, 0.5, **{"gen_ai.request.model": f"model-{index}"})

    history = processor.history
    assert len(history) == HISTORY_SIZE
    assert history[0].model == "model-5"
    assert history[-1].model == f"model-{HISTORY_SIZE + 4}"
    assert processor.request_count == HISTORY_SIZE + 5


def test_reset_forgets_spend_history_and_alerts(make: Any, alerts: Alerts) -> None:
    processor = make(1.0, thresholds=(0.5,))
    call(processor, 2.0)
    processor.reset()

    assert processor.total_cost == 0
    assert processor.request_count == 0
    assert processor.cost_by_model == {}
    assert processor.history == []
    assert not processor.budget_exceeded

    call(processor, 2.0)
    assert alerts.fractions == [0.5, 0.5]
    assert len(alerts.exceeded) == 2


# --- alerts ---------------------------------------------------------------------------------


def test_each_threshold_fires_once_with_callback_log_and_gauges(
    make: Any, alerts: Alerts, providers: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    processor = make(1.0, name="team-a")
    caplog.set_level(logging.WARNING, logger="spendmeter")

    call(processor, 0.25)
    assert alerts.fractions == []
    assert gauge(providers, "spendmeter.budget.spent") == {labels(name="team-a"): 0.25}
    assert gauge(providers, "spendmeter.budget.limit") == {labels(name="team-a"): 1.0}

    call(processor, 0.25)  # 50%
    call(processor, 0.125)
    call(processor, 0.25)  # 87.5%: passes 80%
    call(processor, 0.125)  # 100% reached, not passed
    assert alerts.fractions == [0.5, 0.8, 1.0]
    assert alerts.exceeded == []
    assert not processor.budget_exceeded

    call(processor, 0.125)  # passes the budget
    call(processor, 0.125)
    assert alerts.fractions == [0.5, 0.8, 1.0]
    assert len(alerts.exceeded) == 1
    assert processor.budget_exceeded
    assert gauge(providers, "spendmeter.budget.spent") == {labels(name="team-a"): 1.25}

    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("spendmeter")]
    assert len(warnings) == 4
    assert "50%" in warnings[0] and "'team-a'" in warnings[0]
    assert "80%" in warnings[1]
    assert "100%" in warnings[2]
    assert "exceeds" in warnings[3]


def test_several_thresholds_crossed_by_one_call_all_fire(make: Any, alerts: Alerts) -> None:
    processor = make(1.0)
    call(processor, 2.0)
    assert alerts.fractions == [0.5, 0.8, 1.0]
    assert len(alerts.exceeded) == 1


def test_float_rounding_does_not_hide_or_fake_a_crossing(make: Any, alerts: Alerts) -> None:
    processor = make(1.0, thresholds=(0.8, 1.0), raise_on_budget=True)
    for _ in range(8):
        call(processor, 0.1)  # 0.7999999999999999 in floats
    assert alerts.fractions == [0.8]
    call(processor, 0.1)
    call(processor, 0.1)  # 0.9999999999999999: the budget reached, not passed
    assert alerts.fractions == [0.8, 1.0]
    assert not processor.budget_exceeded
    with pytest.raises(BudgetExceededError):
        call(processor, 0.1)


def test_spend_equal_to_the_budget_up_to_rounding_does_not_pass_it(make: Any) -> None:
    processor = make(0.3, raise_on_budget=True)
    call(processor, 0.1)
    call(processor, 0.2)  # 0.30000000000000004 in floats
    assert not processor.budget_exceeded
    processor.before_call(CHAT)


def test_a_zero_budget_is_passed_by_the_first_priced_call_only(make: Any, alerts: Alerts) -> None:
    processor = make(0.0)
    call(processor, None)
    call(processor, 0.0)  # a priced model that costs nothing
    assert alerts.fractions == []
    assert alerts.exceeded == []
    call(processor, 0.001)
    assert alerts.fractions == [0.5, 0.8, 1.0]
    assert len(alerts.exceeded) == 1


def test_a_threshold_crossing_adds_an_event_to_the_current_span(
    make: Any, providers: Telemetry
) -> None:
    processor = make(1.0, name="ops", thresholds=(0.5,))
    tracer = providers.tracer_provider.get_tracer("test")

    with tracer.start_as_current_span("chat gpt-4o-mini"):
        call(processor, 0.5)

    span = providers.span()
    (event,) = span.events
    assert event.name == "spendmeter.budget.threshold"
    assert dict(event.attributes or {}) == {
        "spendmeter.budget.name": "ops",
        "spendmeter.budget.fraction": 0.5,
        "spendmeter.budget.spent": 0.5,
        "spendmeter.budget.limit": 1.0,
    }


def test_a_callback_that_raises_is_logged_and_swallowed(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken_threshold(fraction: float, processor: BudgetSpanProcessor) -> None:
        seen.append(f"threshold {fraction}")
        raise RuntimeError("pager is down")

    def broken_exceeded(processor: BudgetSpanProcessor) -> None:
        seen.append("exceeded")
        raise BudgetExceededError(1.0, 2.0)

    processor = make(
        1.0, on_threshold=broken_threshold, on_budget_exceeded=broken_exceeded, thresholds=(1.0,)
    )
    call(processor, 2.0)  # alert mode: nothing escapes

    assert seen == ["threshold 1.0", "exceeded"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert all(r.exc_info for r in failures)


def test_a_callback_may_call_back_into_the_processor(make: Any) -> None:
    seen: list[tuple[float, int, bool]] = []

    def report(processor: BudgetSpanProcessor) -> None:
        seen.append((processor.total_cost, processor.request_count, processor.budget_exceeded))
        processor.reset()

    processor = make(1.0, on_budget_exceeded=report)
    call(processor, 1.5)
    assert seen == [(1.5, 1, True)]
    assert processor.total_cost == 0


# --- hard stop ------------------------------------------------------------------------------


def test_raise_on_budget_raises_on_the_crossing_call_then_refuses(
    make: Any, alerts: Alerts
) -> None:
    processor = make(1.0, raise_on_budget=True)
    call(processor, 0.75)
    call(processor, 0.25)  # reaches 100%: not passed yet

    with pytest.raises(BudgetExceededError) as crossing:
        call(processor, 0.5)
    assert crossing.value.budget == 1.0
    assert crossing.value.total_cost == 1.5
    assert crossing.value.response is None  # the instrumentor attaches the paid-for response
    assert len(alerts.exceeded) == 1

    for _ in range(3):
        with pytest.raises(BudgetExceededError) as refused:
            processor.before_call(CHAT)
        assert refused.value.total_cost == 1.5
        assert refused.value.response is None
    assert processor.request_count == 3
    assert processor.total_cost == 1.5
    assert len(alerts.exceeded) == 1


def test_alert_mode_never_raises(make: Any, alerts: Alerts) -> None:
    processor = make(1.0)
    for _ in range(5):
        call(processor, 1.0)
    assert processor.total_cost == 5.0
    assert len(alerts.exceeded) == 1


def test_an_unpriced_call_is_refused_too_once_the_budget_is_passed(make: Any) -> None:
    processor = make(1.0, raise_on_budget=True)
    with pytest.raises(BudgetExceededError):
        call(processor, 2.0)
    with pytest.raises(BudgetExceededError):
        call(processor, None)


# --- windows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "start", "same_window", "next_window"),
    [
        ("hour", at(2025, 3, 4, 10, 0), at(2025, 3, 4, 10, 59, 59), at(2025, 3, 4, 11, 0)),
        ("day", at(2025, 3, 4, 0, 0), at(2025, 3, 4, 23, 59, 59), at(2025, 3, 5, 0, 0)),
        ("month", at(2025, 2, 1), at(2025, 2, 28, 23, 59, 59), at(2025, 3, 1)),
        ("month", at(2024, 12, 31, 23), at(2024, 12, 31, 23, 59, 59), at(2025, 1, 1)),
    ],
)
def test_a_window_boundary_resets_spend_alerts_and_refusal(
    make: Any,
    alerts: Alerts,
    window: str,
    start: datetime,
    same_window: datetime,
    next_window: datetime,
) -> None:
    clock = Clock(start)
    processor = make(1.0, window=window, clock=clock, raise_on_budget=True, thresholds=(0.5,))
    with pytest.raises(BudgetExceededError):
        call(processor, 1.5)

    clock.now = same_window
    with pytest.raises(BudgetExceededError):
        processor.before_call(CHAT)
    assert processor.total_cost == 1.5

    clock.now = next_window
    assert processor.total_cost == 0
    assert processor.request_count == 0
    assert not processor.budget_exceeded
    call(processor, 0.5)  # allowed again
    assert alerts.fractions == [0.5, 0.5]
    with pytest.raises(BudgetExceededError):
        call(processor, 0.75)
    assert len(alerts.exceeded) == 2
    # history is a log of calls and spans windows
    assert [r.timestamp for r in processor.history] == [start, next_window, next_window]


def test_a_clock_in_another_timezone_is_read_as_utc(make: Any) -> None:
    plus_two = timezone(timedelta(hours=2))
    clock = Clock(datetime(2025, 3, 5, 1, 30, tzinfo=plus_two))  # 23:30 UTC on the 4th
    processor = make(1.0, window="day", clock=clock)
    call(processor, 0.5)
    clock.now = datetime(2025, 3, 4, 23, 45, tzinfo=timezone.utc)
    assert processor.total_cost == 0.5
    clock.now = datetime(2025, 3, 5, 2, 0, tzinfo=plus_two)  # 00:00 UTC on the 5th
    assert processor.total_cost == 0


def test_a_late_clock_reading_never_moves_the_window_back(make: Any) -> None:
    clock = Clock(at(2025, 3, 4, 11, 0))
    processor = make(1.0, window="hour", clock=clock)
    call(processor, 0.5)
    clock.now = at(2025, 3, 4, 10, 59)  # a thread that read the clock before the boundary
    call(processor, 0.25)
    clock.now = at(2025, 3, 4, 11, 1)
    assert processor.total_cost == 0.75


# --- scope ----------------------------------------------------------------------------------


def test_each_scope_value_has_its_own_budget(
    make: Any, alerts: Alerts, providers: Telemetry
) -> None:
    processor = make(1.0, scope="user.id", raise_on_budget=True, thresholds=(0.5,))
    call(processor, 0.75, **{"user.id": "alice"})
    with pytest.raises(BudgetExceededError) as crossing:
        call(processor, 0.5, **{"user.id": "alice"})
    assert crossing.value.scope == "alice"
    assert "alice" in str(crossing.value)

    call(processor, 0.75, **{"user.id": "bob"})  # bob is not refused
    call(processor, 0.25)  # no user: the unscoped ledger, with its own budget
    with pytest.raises(BudgetExceededError) as refused:
        processor.before_call({**CHAT, "user.id": "alice"})
    assert refused.value.scope == "alice"

    assert processor.cost_by_scope == {None: 0.25, "alice": 1.25, "bob": 0.75}
    assert processor.spent("alice") == 1.25
    assert processor.spent("carol") == 0
    assert processor.total_cost == 2.25
    assert processor.request_count == 4
    assert processor.budget_exceeded
    assert alerts.fractions == [0.5, 0.5]  # alice and bob, once each
    assert len(alerts.exceeded) == 1
    assert gauge(providers, "spendmeter.budget.spent") == {
        labels(name="default"): 0.25,
        labels(name="default", scope="alice"): 1.25,
        labels(name="default", scope="bob"): 0.75,
    }


def test_calls_without_the_scope_attribute_share_the_unscoped_budget(make: Any) -> None:
    processor = make(1.0, scope="spendmeter.metadata.team", raise_on_budget=True)
    call(processor, 0.75)
    with pytest.raises(BudgetExceededError) as crossing:
        call(processor, 0.5)
    assert crossing.value.scope is None
    call(processor, 0.5, **{"spendmeter.metadata.team": "search"})


# --- concurrency ----------------------------------------------------------------------------


@pytest.fixture
def eager_thread_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so that unguarded races show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("eager_thread_switching")
def test_sixteen_threads_racing_in_alert_mode_count_exactly(make: Any, alerts: Alerts) -> None:
    processor = make(100.0)
    threads, calls_each = 16, 100  # 200 USD in all: twice the budget
    barrier = threading.Barrier(threads)

    def spend() -> None:
        barrier.wait()
        for _ in range(calls_each):
            call(processor, COST)

    workers = [threading.Thread(target=spend) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert processor.total_cost == threads * calls_each * COST
    assert processor.request_count == threads * calls_each
    assert sorted(alerts.fractions) == [0.5, 0.8, 1.0]
    assert len(alerts.exceeded) == 1


@pytest.mark.usefixtures("eager_thread_switching")
def test_sixteen_threads_racing_past_a_raising_budget(make: Any, alerts: Alerts) -> None:
    processor = make(10.0, raise_on_budget=True)
    threads = 16
    barrier = threading.Barrier(threads)
    lock = threading.Lock()
    outcome = {"paid": 0, "crossing": 0, "refused": 0}

    def spend() -> None:
        barrier.wait()
        while True:
            attributes = dict(CHAT)
            try:
                processor.before_call(attributes)
            except BudgetExceededError:
                with lock:
                    outcome["refused"] += 1
                return
            try:
                processor.after_call(attributes, COST)
            except BudgetExceededError:
                with lock:
                    outcome["crossing"] += 1
            with lock:
                outcome["paid"] += 1

    workers = [threading.Thread(target=spend) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert outcome["crossing"] == 1
    assert outcome["refused"] == threads
    assert processor.total_cost == outcome["paid"] * COST
    # Overshoot is bounded by the calls in flight when the budget was passed.
    assert 10.0 < processor.total_cost <= 10.0 + threads * COST
    assert sorted(alerts.fractions) == [0.5, 0.8, 1.0]
    assert len(alerts.exceeded) == 1


async def test_five_hundred_tasks_racing_in_alert_mode_count_exactly(
    make: Any, alerts: Alerts
) -> None:
    processor = make(40.0)

    async def one_call() -> None:
        processor.before_call(CHAT)
        await asyncio.sleep(0)  # the request is in flight
        processor.after_call(CHAT, COST)

    await asyncio.gather(*(one_call() for _ in range(500)))

    assert processor.total_cost == 500 * COST
    assert processor.request_count == 500
    assert alerts.fractions == [0.5, 0.8, 1.0]
    assert len(alerts.exceeded) == 1


async def test_five_hundred_tasks_racing_past_a_raising_budget(make: Any, alerts: Alerts) -> None:
    processor = make(20.0, raise_on_budget=True)
    in_flight = asyncio.Semaphore(25)
    outcome = {"paid": 0, "crossing": 0, "refused": 0}

    async def one_call() -> None:
        async with in_flight:
            try:
                processor.before_call(CHAT)
            except BudgetExceededError:
                outcome["refused"] += 1
                return
            await asyncio.sleep(0)
            outcome["paid"] += 1
            try:
                processor.after_call(CHAT, COST)
            except BudgetExceededError:
                outcome["crossing"] += 1

    await asyncio.gather(*(one_call() for _ in range(500)))

    assert outcome["crossing"] == 1
    assert outcome["paid"] + outcome["refused"] == 500
    assert outcome["refused"] > 0
    assert processor.total_cost == outcome["paid"] * COST
    assert 20.0 < processor.total_cost <= 20.0 + 25 * COST
    assert len(alerts.exceeded) == 1


# --- life with a TracerProvider -------------------------------------------------------------


def test_processors_after_the_budget_still_get_every_span(make: Any, make_telemetry: Any) -> None:
    processor = make(0.5, raise_on_budget=True)
    telemetry = make_telemetry(first=lambda _: processor)  # the exporter comes after it
    tracer = telemetry.tracer_provider.get_tracer("test")

    with tracer.start_as_current_span("chat gpt-4o-mini"):
        call(processor, 0.25)
    with pytest.raises(BudgetExceededError), tracer.start_as_current_span("chat gpt-4o-mini"):
        call(processor, 0.5)
    with pytest.raises(BudgetExceededError), tracer.start_as_current_span("chat gpt-4o-mini"):
        call(processor, 0.5)  # refused

    assert len(telemetry.spans()) == 3


def test_shutting_down_the_tracer_provider_detaches_the_budget(
    make: Any, providers: Telemetry
) -> None:
    processor = make(1.0, name="gone")
    tracer_provider = providers.tracer_provider
    tracer_provider.add_span_processor(processor)
    assert _listeners.budgets_of(tracer_provider) == (processor,)

    tracer_provider.shutdown()

    assert _listeners.budgets_of(tracer_provider) == ()
    assert labels(name="gone") not in gauge(providers, "spendmeter.budget.spent")


def test_two_budgets_on_one_meter_provider_both_report(make: Any, providers: Telemetry) -> None:
    daily = make(1.0, name="daily", window="day")
    monthly = make(20.0, name="monthly", window="month")
    call(daily, 0.25)
    call(monthly, 0.5)

    assert gauge(providers, "spendmeter.budget.spent") == {
        labels(name="daily"): 0.25,
        labels(name="monthly"): 0.5,
    }
    assert gauge(providers, "spendmeter.budget.limit") == {
        labels(name="daily"): 1.0,
        labels(name="monthly"): 20.0,
    }
