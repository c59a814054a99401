"""Budgets end to end: ``BudgetSpanProcessor`` fed by real LiteLLM calls through the instrumentor.

Every pipeline here registers its exporter *after* the budget processor, so each test also
shows that a budget never takes a span from the processors after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections.abc import Callable
from typing import Any

import litellm
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

from spendmeter import BudgetExceededError, BudgetSpanProcessor
from spendmeter import semconv as sc
from spendmeter.config import ConfigError
from tests._support import (
    ANSWER,
    FAKE_MODEL,
    FAKE_PRICES,
    MESSAGES,
    Alerts,
    FakeProvider,
    Telemetry,
    ask_fake,
    budget_first,
    chat,
    fake_call_cost,
    run_instrumented,
)

BUDGET_LOGGER = "spendmeter.budget"


def cost_of(span: ReadableSpan) -> float:
    return span.attributes[sc.GEN_AI_USAGE_COST]


def threshold_events(span: ReadableSpan) -> list[float]:
    return [
        event.attributes[sc.SPENDMETER_BUDGET_FRACTION]
        for event in span.events
        if event.name == sc.EVENT_BUDGET_THRESHOLD
    ]


def assert_refused(span: ReadableSpan) -> None:
    assert span.attributes[sc.ERROR_TYPE] == "BudgetExceededError"
    assert span.status.status_code is StatusCode.ERROR
    assert sc.GEN_AI_USAGE_COST not in span.attributes
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes


@pytest.fixture
def budgeted(make_telemetry: Any, instrument: Any, alerts: Alerts) -> Any:
    """``budgeted(budget, sampler=..., **processor_options)``: an instrumented LiteLLM whose
    tracer provider holds the budget processor first and an in-memory exporter after it."""

    def _budgeted(
        budget: float, *, sampler: Any = None, **options: Any
    ) -> tuple[BudgetSpanProcessor, Telemetry]:
        first = budget_first(
            budget,
            on_threshold=alerts.on_threshold,
            on_budget_exceeded=alerts.on_budget_exceeded,
            **options,
        )
        # Shut down after the test, which shuts the budget down: it stops listening.
        telemetry: Telemetry = make_telemetry(sampler=sampler, first=first)
        instrument(telemetry, pricing=FAKE_PRICES)
        return telemetry.budget, telemetry

    return _budgeted


# --- spend is counted for every call ------------------------------------------------------


async def test_spend_is_counted_for_every_priced_call_when_no_trace_is_sampled(
    budgeted: Any,
) -> None:
    processor, telemetry = budgeted(1.0, sampler=ALWAYS_OFF)

    responses = [
        chat(),
        chat(mock_response="A longer answer, so that this call costs more than the first."),
        await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER),
        litellm.embedding(model="text-embedding-3-small", input=["spend"], mock_response=[0.1]),
    ]

    expected = math.fsum(litellm.completion_cost(completion_response=r) for r in responses)
    assert expected > 0
    assert telemetry.spans() == []
    assert processor.request_count == 4
    assert processor.total_cost == pytest.approx(expected, rel=1e-12)
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(expected, rel=1e-12)


def test_the_hard_stop_holds_when_no_trace_is_sampled(
    budgeted: Any, fake_provider: FakeProvider
) -> None:
    cost = fake_call_cost()
    processor, telemetry = budgeted(1.5 * cost, sampler=ALWAYS_OFF, raise_on_budget=True)

    ask_fake()
    with pytest.raises(BudgetExceededError) as crossed:
        ask_fake()
    with pytest.raises(BudgetExceededError) as refused:
        ask_fake()

    assert crossed.value.response is not None
    assert refused.value.response is None
    assert fake_provider.requests == 2
    assert processor.total_cost == pytest.approx(2 * cost)
    assert telemetry.spans() == []


# --- the hard stop ------------------------------------------------------------------------


async def test_the_crossing_call_raises_with_its_response_then_later_calls_never_leave(
    budgeted: Any, fake_provider: FakeProvider
) -> None:
    cost = fake_call_cost()
    processor, telemetry = budgeted(2.5 * cost, raise_on_budget=True)

    ask_fake()
    ask_fake()
    with pytest.raises(BudgetExceededError) as crossed:
        ask_fake()
    # The crossing call's span reached the exporter, cost and all, before the error did.
    spans_when_caught = telemetry.spans()

    stop = crossed.value
    assert fake_provider.requests == 3
    assert len(spans_when_caught) == 3
    crossing_span = spans_when_caught[-1]
    assert cost_of(crossing_span) == pytest.approx(cost, rel=1e-12)
    assert crossing_span.status.status_code is StatusCode.UNSET
    assert isinstance(stop.response, litellm.ModelResponse)
    assert stop.response.choices[0].message.content == "ok"
    assert stop.response.id == crossing_span.attributes[sc.GEN_AI_RESPONSE_ID]
    assert stop.response.usage.prompt_tokens == fake_provider.usage["prompt_tokens"]
    assert stop.budget == pytest.approx(2.5 * cost)
    assert stop.total_cost == pytest.approx(3 * cost)

    with pytest.raises(BudgetExceededError) as refused_sync:
        ask_fake()
    with pytest.raises(BudgetExceededError) as refused_async:
        await litellm.acompletion(model=FAKE_MODEL, messages=MESSAGES)

    assert fake_provider.requests == 3  # nothing left the process
    assert refused_sync.value.response is None
    assert refused_async.value.response is None
    spans = telemetry.spans()
    assert len(spans) == 5
    for span in spans[3:]:
        assert_refused(span)
    assert processor.request_count == 3
    assert processor.total_cost == pytest.approx(3 * cost)
    # No metric point was lost when the budget tripped.
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(processor.total_cost)


def test_a_stream_that_crosses_the_budget_is_delivered_whole_then_the_next_call_is_refused(
    budgeted: Any, fake_provider: FakeProvider
) -> None:
    processor, telemetry = budgeted(1e-9, raise_on_budget=True)

    stream = chat(stream=True, stream_options={"include_usage": True})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text == ANSWER
    assert processor.budget_exceeded
    (span,) = telemetry.spans()
    assert cost_of(span) == pytest.approx(processor.total_cost, rel=1e-12)
    assert threshold_events(span) == [0.5, 0.8, 1.0]
    with pytest.raises(BudgetExceededError) as refused:
        ask_fake()
    assert refused.value.response is None
    assert fake_provider.requests == 0
    assert_refused(telemetry.spans()[-1])


async def test_an_async_stream_that_crosses_the_budget_is_delivered_whole(
    budgeted: Any, fake_provider: FakeProvider
) -> None:
    processor, telemetry = budgeted(1e-9, raise_on_budget=True)

    stream = await litellm.acompletion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response=ANSWER,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join(
        [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    )

    assert text == ANSWER
    assert processor.budget_exceeded
    assert cost_of(telemetry.span()) == pytest.approx(processor.total_cost, rel=1e-12)
    with pytest.raises(BudgetExceededError):
        await litellm.acompletion(model=FAKE_MODEL, messages=MESSAGES)
    assert fake_provider.requests == 0


# --- alerts -------------------------------------------------------------------------------


def test_each_threshold_alerts_once_through_callback_log_span_event_and_gauges(
    budgeted: Any,
    fake_provider: FakeProvider,
    alerts: Alerts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cost = fake_call_cost()
    budget = 0.1
    assert 2 * cost >= 0.5 * budget > cost and 4 * cost > budget > 3 * cost  # the plan below
    processor, telemetry = budgeted(budget)

    with caplog.at_level(logging.WARNING, logger=BUDGET_LOGGER):
        responses = [ask_fake() for _ in range(6)]

    assert all(response.choices[0].message.content == "ok" for response in responses)
    spans = telemetry.spans()
    assert [threshold_events(span) for span in spans] == [[], [0.5], [], [0.8, 1.0], [], []]
    assert alerts.thresholds == [
        (0.5, pytest.approx(2 * cost)),
        (0.8, pytest.approx(4 * cost)),
        (1.0, pytest.approx(4 * cost)),
    ]
    assert alerts.exceeded == [pytest.approx(4 * cost)]
    warnings = [r.getMessage() for r in caplog.records if r.name == BUDGET_LOGGER]
    assert len(warnings) == 4
    assert [re.findall(r"reached (\d+)%", warning) for warning in warnings[:3]] == [
        ["50"],
        ["80"],
        ["100"],
    ]
    assert "exceeds" in warnings[-1]
    event = next(e for e in spans[1].events if e.name == sc.EVENT_BUDGET_THRESHOLD)
    assert event.attributes[sc.SPENDMETER_BUDGET_SPENT] == pytest.approx(2 * cost)
    assert event.attributes[sc.SPENDMETER_BUDGET_LIMIT] == budget

    (spent,) = telemetry.points(sc.METRIC_BUDGET_SPENT)
    (limit,) = telemetry.points(sc.METRIC_BUDGET_LIMIT)
    assert spent.value == pytest.approx(processor.total_cost, rel=1e-12)
    assert processor.total_cost == pytest.approx(6 * cost)
    assert limit.value == budget
    assert spent.attributes[sc.SPENDMETER_BUDGET_NAME] == processor.name


# --- concurrency --------------------------------------------------------------------------


def assert_raced_past_the_budget_exactly(
    processor: BudgetSpanProcessor,
    telemetry: Telemetry,
    alerts: Alerts,
    stops: list[BudgetExceededError],
    workers: int,
) -> None:
    """Every worker ended on one ``BudgetExceededError``; check the books balance."""
    spans = telemetry.spans()
    priced = [span for span in spans if sc.GEN_AI_USAGE_COST in span.attributes]
    refused = [span for span in spans if sc.ERROR_TYPE in span.attributes]
    assert len(priced) + len(refused) == len(spans)
    assert len(stops) == workers
    # One call crossed the budget and kept its response; every other worker was refused.
    assert sum(stop.response is not None for stop in stops) == 1
    assert len(refused) == workers - 1
    for span in refused:
        assert_refused(span)

    spent = math.fsum(cost_of(span) for span in priced)
    assert processor.request_count == len(priced)
    assert processor.total_cost == pytest.approx(spent, rel=1e-9)
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(spent, rel=1e-9)
    # Overshoot: only calls already in flight when the budget was passed, at most one a worker.
    most = max(cost_of(span) for span in priced)
    assert processor.budget < processor.total_cost <= processor.budget + workers * most

    assert sorted(fraction for fraction, _ in alerts.thresholds) == [0.5, 0.8, 1.0]
    assert len(alerts.exceeded) == 1
    events = sorted(fraction for span in spans for fraction in threshold_events(span))
    assert events == [0.5, 0.8, 1.0]


def unit_cost() -> float:
    """What one mocked gpt-4o-mini call costs, from LiteLLM's own price map."""
    return litellm.completion_cost(completion_response=chat())


def race_until_stopped(workers: int, spend: Callable[[], object]) -> list[BudgetExceededError]:
    """Starts ``workers`` threads at once, each calling ``spend`` until a budget stops it;
    returns what stopped each of them."""
    start = threading.Barrier(workers)
    stops: list[BudgetExceededError] = []

    def spend_until_stopped() -> None:
        start.wait()
        while True:
            try:
                spend()
            except BudgetExceededError as stop:
                stops.append(stop)
                return

    threads = [threading.Thread(target=spend_until_stopped) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return stops


def test_sixteen_threads_racing_past_the_budget(budgeted: Any, alerts: Alerts) -> None:
    workers = 16
    processor, telemetry = budgeted(200.5 * unit_cost(), raise_on_budget=True)

    stops = race_until_stopped(workers, chat)

    assert_raced_past_the_budget_exactly(processor, telemetry, alerts, stops, workers)


@pytest.mark.slow
async def test_five_hundred_tasks_racing_past_the_budget(budgeted: Any, alerts: Alerts) -> None:
    workers = 500
    processor, telemetry = budgeted(800.5 * unit_cost(), raise_on_budget=True)
    stops: list[BudgetExceededError] = []

    async def spend_until_stopped() -> None:
        while True:
            try:
                await litellm.acompletion(
                    model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER
                )
            except BudgetExceededError as stop:
                stops.append(stop)
                return

    await asyncio.gather(*(spend_until_stopped() for _ in range(workers)))

    assert_raced_past_the_budget_exactly(processor, telemetry, alerts, stops, workers)


# --- budgets per user or per team ---------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "tag"),
    [
        ("user.id", lambda who: {"user": who}),
        ("spendmeter.metadata.team", lambda who: {"metadata": {"team": who}}),
    ],
    ids=["user", "metadata"],
)
def test_one_exhausted_scope_value_is_refused_while_another_goes_through(
    budgeted: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    scope: str,
    tag: Any,
) -> None:
    monkeypatch.setenv("SPENDMETER_METADATA_KEYS", "team")  # read at instrument time
    cost = fake_call_cost()
    processor, telemetry = budgeted(1.5 * cost, raise_on_budget=True, scope=scope)

    ask_fake(**tag("search"))
    with pytest.raises(BudgetExceededError) as crossed:
        ask_fake(**tag("search"))
    with pytest.raises(BudgetExceededError) as refused:
        ask_fake(**tag("search"))
    assert fake_provider.requests == 2
    answer = ask_fake(**tag("support"))

    assert answer.choices[0].message.content == "ok"
    assert fake_provider.requests == 3
    assert crossed.value.scope == refused.value.scope == "search"
    assert processor.cost_by_scope == {
        None: 0.0,
        "search": pytest.approx(2 * cost),
        "support": pytest.approx(cost),
    }
    refused_span = telemetry.spans()[2]
    assert_refused(refused_span)
    assert refused_span.attributes[scope] == "search"


# --- zero-code ----------------------------------------------------------------------------


def budget_env(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(f"SPENDMETER_BUDGET_{name}", value)


def test_budget_variables_install_a_raising_budget(
    instrument: Any, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    cost = fake_call_cost()
    budget = 2.7 * cost
    budget_env(monkeypatch, USD=repr(budget), ACTION="raise", THRESHOLDS="0.3,1", WINDOW="day")
    telemetry = instrument(pricing=FAKE_PRICES)

    ask_fake()
    ask_fake()
    with pytest.raises(BudgetExceededError) as crossed:
        ask_fake()
    with pytest.raises(BudgetExceededError):
        ask_fake()

    assert crossed.value.response is not None
    assert crossed.value.budget == budget
    assert fake_provider.requests == 3
    spans = telemetry.spans()
    # 0.3 and 1.0 as asked, not the default 0.5 and 0.8.
    assert [threshold_events(span) for span in spans] == [[0.3], [], [1.0], []]
    assert_refused(spans[-1])
    (limit,) = telemetry.points(sc.METRIC_BUDGET_LIMIT)
    assert limit.value == budget


def test_budget_variables_install_an_alerting_budget(
    instrument: Any,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget_env(monkeypatch, USD=repr(0.5 * fake_call_cost()), ACTION="alert")
    telemetry = instrument(pricing=FAKE_PRICES)

    with caplog.at_level(logging.WARNING, logger=BUDGET_LOGGER):
        for _ in range(3):
            ask_fake()

    assert fake_provider.requests == 3
    assert all(sc.ERROR_TYPE not in span.attributes for span in telemetry.spans())
    warnings = [r.getMessage() for r in caplog.records if r.name == BUDGET_LOGGER]
    assert sum("exceeds" in warning for warning in warnings) == 1
    assert sum("reached" in warning for warning in warnings) == 3


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SPENDMETER_BUDGET_USD", "ten"),
        ("SPENDMETER_BUDGET_USD", "-1"),
        ("SPENDMETER_BUDGET_USD", "nan"),
        ("SPENDMETER_BUDGET_ACTION", "stop"),
        ("SPENDMETER_BUDGET_THRESHOLDS", "0.5,2"),
        ("SPENDMETER_BUDGET_THRESHOLDS", "half"),
        ("SPENDMETER_BUDGET_WINDOW", "week"),
    ],
)
def test_a_bad_budget_variable_fails_instrument_naming_it_and_patches_nothing(
    instrument: Any,
    providers: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv("SPENDMETER_BUDGET_USD", "1")
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=re.escape(f"{variable}={value!r} is not valid")):
        instrument()

    chat()
    assert providers.spans() == []  # LiteLLM was left as it was


@pytest.mark.integration
def test_the_demo_app_is_stopped_by_its_budget_under_opentelemetry_instrument() -> None:
    per_call = unit_cost()  # the demo asks the same question, with the same mocked answer
    budget = 3.5 * per_call

    done = run_instrumented(
        ["examples/budget_demo.py"],
        timeout=60,
        SPENDMETER_BUDGET_USD=repr(budget),
        SPENDMETER_BUDGET_ACTION="raise",
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "budget_demo: call 4 crossed the budget; its answer is kept" in done.stdout
    found = re.search(r"refused after (\d+) calls; spent \$([0-9.]+) of a \$([0-9.]+)", done.stdout)
    assert found, done.stdout
    calls, spent, limit = int(found[1]), float(found[2]), float(found[3])
    assert calls == 4
    assert spent == pytest.approx(4 * per_call, abs=1e-9)
    assert limit == pytest.approx(budget, abs=1e-9)


@pytest.mark.integration
def test_a_bad_budget_variable_is_reported_at_start_up_under_opentelemetry_instrument() -> None:
    app = (
        "import litellm, wrapt; "
        "print('patched:', isinstance(litellm.completion, wrapt.ObjectProxy))"
    )

    done = run_instrumented(["-c", app], timeout=60, SPENDMETER_BUDGET_USD="-1")

    # opentelemetry-instrument logs an instrumentor's error and runs the app uninstrumented.
    assert "SPENDMETER_BUDGET_USD='-1' is not valid" in done.stderr
    assert done.stdout.strip() == "patched: False"


# --- reservations (reserve=True) ----------------------------------------------------------


def fake_worst_case(max_tokens: int) -> float:
    """The documented reservation: the prompt counted locally, plus max_tokens, at the prices."""
    prices = FAKE_PRICES[FAKE_MODEL]
    prompt = litellm.token_counter(model=FAKE_MODEL, messages=MESSAGES)
    return prompt * prices["input_cost_per_token"] + max_tokens * prices["output_cost_per_token"]


def watch_reserved(
    monkeypatch: pytest.MonkeyPatch, provider: FakeProvider, processor: BudgetSpanProcessor
) -> list[float]:
    """What ``processor`` holds back at the moment each request reaches the provider."""
    seen: list[float] = []
    answer = provider.completion

    def completion(*args: Any, **kwargs: Any) -> Any:
        seen.append(processor.reserved)
        return answer(*args, **kwargs)

    monkeypatch.setattr(provider, "completion", completion)
    return seen


def test_reserve_needs_a_budget_that_raises() -> None:
    with pytest.raises(ValueError, match="reserve=True needs raise_on_budget=True"):
        BudgetSpanProcessor(1.0, reserve=True)


def test_a_call_whose_worst_case_does_not_fit_is_refused_before_it_is_sent(
    budgeted: Any, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    cost, worst = fake_call_cost(), fake_worst_case(20)
    budget = 0.09
    assert cost + worst <= budget < 2 * cost + worst  # the plan below
    processor, telemetry = budgeted(budget, raise_on_budget=True, reserve=True)
    reserved_in_flight = watch_reserved(monkeypatch, fake_provider, processor)

    ask_fake(max_tokens=20)
    ask_fake(max_tokens=20)
    with pytest.raises(BudgetExceededError, match=r"may cost up to \$0\.053000") as refused:
        ask_fake(max_tokens=20)

    assert fake_provider.requests == 2
    assert reserved_in_flight == [pytest.approx(worst), pytest.approx(worst)]
    assert refused.value.response is None
    assert refused.value.total_cost == pytest.approx(2 * cost)
    assert processor.reserved == 0
    assert not processor.budget_exceeded  # spend never passed the budget
    assert_refused(telemetry.spans()[-1])

    # A tighter max_tokens is a smaller worst case, which still fits.
    assert 2 * cost + fake_worst_case(5) <= budget
    ask_fake(max_tokens=5)
    assert fake_provider.requests == 3
    assert processor.total_cost == pytest.approx(3 * cost)
    assert processor.total_cost <= budget


def test_a_failed_call_gives_back_its_reservation(
    budgeted: Any, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    worst = fake_worst_case(20)
    processor, _ = budgeted(1.5 * worst, raise_on_budget=True, reserve=True)

    def provider_down(*args: Any, **kwargs: Any) -> Any:
        raise litellm.ServiceUnavailableError("provider down", "fakellm", "fake-model")

    with monkeypatch.context() as patch:
        patch.setattr(fake_provider, "completion", provider_down)
        with pytest.raises(litellm.ServiceUnavailableError):
            ask_fake(max_tokens=20)

    assert processor.reserved == 0
    answer = ask_fake(max_tokens=20)  # would not fit beside a leaked reservation
    assert answer.choices[0].message.content == "ok"


def test_a_stream_holds_its_reservation_until_it_ends(budgeted: Any) -> None:
    processor, _ = budgeted(1.0, raise_on_budget=True, reserve=True)

    def stream() -> Any:
        return chat(stream=True, stream_options={"include_usage": True}, max_tokens=50)

    whole = stream()
    next(whole)
    assert processor.reserved > 0
    for _chunk in whole:
        pass
    assert processor.reserved == 0

    cut_short = stream()
    next(cut_short)
    cut_short.close()
    assert processor.reserved == 0
    assert processor.request_count == 2


def test_a_reservation_is_given_back_when_a_later_budget_refuses_the_call(
    budgeted: Any, fake_provider: FakeProvider
) -> None:
    reserving, telemetry = budgeted(1.0, raise_on_budget=True, reserve=True)
    stopping = BudgetSpanProcessor(0.0, raise_on_budget=True)  # hears of calls after the first
    telemetry.tracer_provider.add_span_processor(stopping)  # shut down with the provider

    with pytest.raises(BudgetExceededError):  # passes the $0 budget
        ask_fake(max_tokens=20)
    with pytest.raises(BudgetExceededError):  # admitted by the first budget, refused by this one
        ask_fake(max_tokens=20)

    assert fake_provider.requests == 1
    assert reserving.reserved == 0
    assert reserving.request_count == 1


def test_calls_whose_cost_has_no_bound_are_not_held_back(
    budgeted: Any, fake_provider: FakeProvider
) -> None:
    processor, _ = budgeted(0.0, raise_on_budget=True, reserve=True)

    litellm.completion(model="fakellm/unpriced-model", messages=MESSAGES, max_tokens=20)

    assert fake_provider.requests == 1
    with pytest.raises(BudgetExceededError, match="may cost up to"):
        ask_fake(max_tokens=20)
    assert processor.request_count == 1


def test_sixteen_threads_racing_with_reservations_never_overspend(
    budgeted: Any, alerts: Alerts
) -> None:
    workers = 16
    processor, telemetry = budgeted(100 * unit_cost(), raise_on_budget=True, reserve=True)

    # A mocked answer is 20 tokens: with max_tokens=20 the worst case is the real cost.
    stops = race_until_stopped(workers, lambda: chat(max_tokens=20))

    assert len(stops) == workers
    assert all(stop.response is None for stop in stops)  # every stop came before a request
    priced = [span for span in telemetry.spans() if sc.GEN_AI_USAGE_COST in span.attributes]
    assert processor.request_count == len(priced) > 0
    assert processor.total_cost == pytest.approx(math.fsum(map(cost_of, priced)), rel=1e-9)
    assert processor.total_cost <= processor.budget
    assert not processor.budget_exceeded
    assert processor.reserved == 0
    assert alerts.exceeded == []
