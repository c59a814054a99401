"""The shared ledger against a real redis-server: processors that name the same ledger and
budget share one total, one cap and one set of alerts, as processes of a fleet would."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from spendmeter import BudgetExceededError, BudgetSpanProcessor, LiteLLMInstrumentor, config
from spendmeter._redis_ledger import HOLD_TTL, KEEP_PAST_END
from spendmeter.config import ConfigError
from tests._support import Alerts, Clock, Telemetry, request
from tests.redis_server import RedisServer

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}
COST = 0.125  # a binary fraction: sums in any order are exact

integration = pytest.mark.integration


def call(processor: BudgetSpanProcessor, cost: float | None = COST, **attributes: Any) -> None:
    attributes = {**CHAT, **attributes}
    one = request(cost)
    processor.before_call(attributes, one)
    processor.after_call(attributes, cost, one)


@pytest.fixture
def shared(redis_server: RedisServer, make_budget: Any) -> Callable[..., BudgetSpanProcessor]:
    """``shared(budget, **options)``: ``make_budget`` on the test's Redis."""

    def build(budget: float = 1.0, **options: Any) -> BudgetSpanProcessor:
        options.setdefault("ledger", redis_server.url)
        processor: BudgetSpanProcessor = make_budget(budget, **options)
        return processor

    return build


def race(workers: int, work: Callable[[int], None]) -> None:
    barrier = threading.Barrier(workers)

    def run(index: int) -> None:
        barrier.wait()
        work(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- one total for all ----------------------------------------------------------------------


@integration
def test_processors_naming_one_ledger_share_its_totals(shared: Any) -> None:
    first, second = shared(10.0), shared(10.0)
    call(first, 0.25)
    call(second, 0.5, **{"gen_ai.request.model": "claude-3-5-haiku"})
    call(second, None, **{"gen_ai.request.model": "my-local-model"})

    for processor in (first, second):
        assert processor.total_cost == 0.75
        assert processor.request_count == 3
        assert processor.cost_by_model == {"gpt-4o-mini": 0.25, "claude-3-5-haiku": 0.5}
    assert [record.cost for record in first.history] == [0.25]  # history is the process's own


@integration
def test_budget_names_keep_ledgers_apart(shared: Any) -> None:
    team_a, team_b = shared(1.0, name="team-a"), shared(1.0, name="team-b")
    call(team_a, 0.5)
    assert team_b.total_cost == 0


@integration
def test_a_call_settled_twice_counts_once(shared: Any) -> None:
    first, second = shared(10.0), shared(10.0)
    once = request()
    first.after_call(CHAT, COST, once)
    first.after_call(CHAT, COST, once)  # a settlement sent again
    second.after_call(CHAT, COST, once)  # or by another process
    assert second.total_cost == COST
    assert second.request_count == 1


# --- the cap, atomically ---------------------------------------------------------------------


@integration
def test_reserving_processors_racing_never_spend_past_the_budget(shared: Any) -> None:
    budget, processes, threads = 5.0, 4, 8
    fleet = [shared(budget, raise_on_budget=True, reserve=True) for _ in range(processes)]
    paid: list[float] = []
    lock = threading.Lock()

    def spend(index: int) -> None:
        processor = fleet[index % processes]
        while True:
            one = request(COST)  # the worst case is the cost: the cap can be met exactly
            try:
                processor.before_call(CHAT, one)
            except BudgetExceededError:
                return
            processor.after_call(CHAT, COST, one)
            with lock:
                paid.append(COST)

    race(processes * threads, spend)

    assert len(paid) == budget / COST  # every call that fits, and not one more
    assert all(processor.total_cost == budget for processor in fleet)
    assert fleet[0].reserved == 0


@integration
@pytest.mark.parametrize(
    ("policy", "budget"),
    [("open", 5.0), ("closed", 300 * COST)],
    ids=["open, the cap holds", "closed, every call that fits goes"],
)
async def test_a_burst_of_async_calls_past_the_pool_size_keeps_the_cap(
    shared: Any, policy: str, budget: float
) -> None:
    # More calls at once than redis-py's pool has connections (100): they wait for one. Taking
    # the full pool for Redis being down would let the burst past the cap ("open") or refuse
    # calls that fit ("closed").
    tasks = 300
    # Waiting for a connection counts against ``ledger_timeout``; a generous one keeps a loaded
    # machine's slow hand-offs from reading as an outage.
    processor = shared(
        budget, raise_on_budget=True, reserve=True, on_ledger_error=policy, ledger_timeout=10.0
    )
    paid: list[float] = []

    async def spend() -> None:
        one = request(COST)
        try:
            await processor.abefore_call(CHAT, one)
        except BudgetExceededError:
            return
        await asyncio.sleep(0.01)  # the call, in flight
        await processor.aafter_call(CHAT, COST, one)
        paid.append(COST)

    await asyncio.gather(*(spend() for _ in range(tasks)))

    assert len(paid) == min(tasks, budget / COST)  # every call that fits, and not one more
    assert processor.total_cost == len(paid) * COST
    assert processor.reserved == 0


@integration
def test_racing_past_a_raising_budget_one_call_crosses_for_the_whole_fleet(
    shared: Any, alerts: Alerts
) -> None:
    fleet = [shared(5.0, raise_on_budget=True) for _ in range(4)]
    outcome = {"paid": 0, "crossing": 0, "refused": 0}
    lock = threading.Lock()

    def spend(index: int) -> None:
        processor = fleet[index % 4]
        while True:
            one = request()
            try:
                processor.before_call(CHAT, one)
            except BudgetExceededError:
                with lock:
                    outcome["refused"] += 1
                return
            try:
                processor.after_call(CHAT, COST, one)
            except BudgetExceededError:
                with lock:
                    outcome["crossing"] += 1
            with lock:
                outcome["paid"] += 1

    race(16, spend)

    assert outcome["crossing"] == 1
    assert outcome["refused"] == 16
    assert fleet[0].total_cost == outcome["paid"] * COST
    assert 5.0 < fleet[0].total_cost <= 5.0 + 16 * COST  # overshoot: the calls in flight
    assert sorted(alerts.fractions) == [0.5, 0.8, 1.0]  # once for the fleet, not per process
    assert len(alerts.exceeded) == 1


@integration
def test_thresholds_fire_once_across_processors_each_on_the_call_that_crossed(
    shared: Any, alerts: Alerts
) -> None:
    first, second = shared(1.0), shared(1.0)
    call(first, 0.25)
    call(second, 0.25)  # 50%: second's call crossed it
    assert alerts.fractions == [0.5]
    call(first, 0.375)  # 87.5%
    call(second, 0.25)  # passes the budget
    call(first, 0.25)
    assert alerts.fractions == [0.5, 0.8, 1.0]
    assert len(alerts.exceeded) == 1
    assert first.budget_exceeded and second.budget_exceeded


@integration
def test_float_rounding_is_judged_as_in_process(shared: Any, alerts: Alerts) -> None:
    processor = shared(1.0, thresholds=(0.8, 1.0), raise_on_budget=True)
    for _ in range(10):
        call(processor, 0.1)  # 0.9999999999999999: the budget reached, not passed
    assert alerts.fractions == [0.8, 1.0]
    assert not processor.budget_exceeded
    with pytest.raises(BudgetExceededError):
        call(processor, 0.1)


@integration
def test_a_reservation_that_does_not_fit_is_refused_for_every_process(shared: Any) -> None:
    first = shared(1.0, raise_on_budget=True, reserve=True)
    second = shared(1.0, raise_on_budget=True, reserve=True)
    held = request(0.75)
    first.before_call(CHAT, held)
    assert second.reserved == 0.75
    with pytest.raises(BudgetExceededError, match=r"may cost up to \$0.500000"):
        second.before_call(CHAT, request(0.5))
    first.call_failed(CHAT, held)
    assert second.reserved == 0
    call(second, 0.5)


@integration
def test_a_hold_whose_process_died_is_given_back_after_its_ttl(shared: Any) -> None:
    clock = Clock(datetime(2025, 3, 4, 10, tzinfo=timezone.utc))
    dead = shared(1.0, raise_on_budget=True, reserve=True, clock=clock)
    dead.before_call(CHAT, request(0.75))  # never settled: its process went away
    alive = shared(1.0, raise_on_budget=True, reserve=True, clock=clock)
    with pytest.raises(BudgetExceededError):
        alive.before_call(CHAT, request(0.5))
    clock.now += timedelta(seconds=HOLD_TTL + 1)
    alive.before_call(CHAT, request(0.5))


# --- windows and scopes ---------------------------------------------------------------------


@integration
def test_window_keys_expire_a_day_past_the_window_end(
    shared: Any, redis_server: RedisServer
) -> None:
    clock = Clock(datetime(2025, 3, 4, 10, 45, tzinfo=timezone.utc))
    call(shared(1.0, window="hour", clock=clock, name="hourly"), 0.25)
    call(shared(1.0, name="forever"), 0.25)

    client = redis_server.client()
    hourly = client.keys("spendmeter:{hourly}:20250304T10:*")
    assert sorted(key.rsplit(":", 1)[1] for key in hourly) == ["m-", "s-", "scopes"]
    for key in hourly:
        assert 15 * 60 + KEEP_PAST_END - 5 <= client.ttl(key) <= 15 * 60 + KEEP_PAST_END
    # Without a window, spend is kept for as long as the budget lives; settled ids expire.
    assert client.ttl("spendmeter:{forever}:all:s-") == -1
    settled = client.keys("spendmeter:{forever}:settled:*")
    assert len(settled) == 1 and 0 < client.ttl(settled[0]) <= 2 * KEEP_PAST_END


@integration
def test_a_window_rolls_over_for_every_processor_at_once(shared: Any, alerts: Alerts) -> None:
    clock = Clock(datetime(2025, 3, 4, 10, 59, tzinfo=timezone.utc))
    fleet = [shared(1.0, window="hour", clock=clock, raise_on_budget=True) for _ in range(3)]
    with pytest.raises(BudgetExceededError):
        call(fleet[0], 1.5)
    for processor in fleet:
        with pytest.raises(BudgetExceededError):
            processor.before_call(CHAT, request())

    clock.now = datetime(2025, 3, 4, 11, 0, tzinfo=timezone.utc)
    assert all(p.total_cost == 0 and not p.budget_exceeded for p in fleet)
    for processor in fleet:
        call(processor, 0.25)
    assert fleet[1].total_cost == 0.75
    assert alerts.fractions == [0.5, 0.8, 1.0, 0.5]
    # A clock read before the boundary never moves a processor back into the old window.
    clock.now = datetime(2025, 3, 4, 10, 59, 59, tzinfo=timezone.utc)
    call(fleet[2], 0.125)
    clock.now = datetime(2025, 3, 4, 11, 1, tzinfo=timezone.utc)
    assert fleet[0].total_cost == 0.875


@integration
def test_each_scope_value_has_its_own_shared_budget(shared: Any, alerts: Alerts) -> None:
    first = shared(1.0, scope="user.id", raise_on_budget=True, thresholds=(0.5,))
    second = shared(1.0, scope="user.id", raise_on_budget=True, thresholds=(0.5,))
    call(first, 0.75, **{"user.id": "alice"})
    with pytest.raises(BudgetExceededError) as crossing:
        call(second, 0.5, **{"user.id": "alice"})
    assert crossing.value.scope == "alice"
    call(second, 0.75, **{"user.id": "bob"})
    call(first, 0.25)  # no user: the unscoped ledger, with its own budget
    with pytest.raises(BudgetExceededError):
        first.before_call({**CHAT, "user.id": "alice"}, request())

    assert first.cost_by_scope == {None: 0.25, "alice": 1.25, "bob": 0.75}
    assert second.spent("alice") == 1.25
    assert second.spent("carol") == 0
    assert alerts.fractions == [0.5, 0.5]
    assert len(alerts.exceeded) == 1


@integration
def test_reset_clears_the_shared_window_and_nobody_hands_its_spend_back(shared: Any) -> None:
    first, second = shared(1.0, raise_on_budget=True), shared(1.0, raise_on_budget=True)
    call(first, 0.5)
    with pytest.raises(BudgetExceededError):
        call(second, 0.75)
    first.reset()

    assert second.total_cost == 0 and not second.budget_exceeded
    call(second, 0.25)  # second sees the cleared ledger: it must not restore its $0.75
    assert first.total_cost == 0.25


# --- gauges ---------------------------------------------------------------------------------


@integration
def test_the_gauges_report_the_fleets_spend(shared: Any, providers: Telemetry) -> None:
    watched = shared(2.0, name="fleet", meter_provider=providers.meter_provider)
    call(shared(2.0, name="fleet"), 0.75)  # another process's call

    assert [point.value for point in providers.points("spendmeter.budget.spent")] == [0.75]
    assert [point.value for point in providers.points("spendmeter.budget.limit")] == [2.0]
    assert watched.total_cost == 0.75


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ledger", "message"),
    [
        ("redis://127.0.0.1:notaport/0", "malformed ledger URL"),
        ("redis:///0", "no host"),
        ("redis://127.0.0.1:6379/zero", "database must be a number"),
        ("http://127.0.0.1:6379/0", "unknown scheme 'http'"),
        ("127.0.0.1:6379", "unknown scheme"),
    ],
)
def test_a_bad_ledger_url_is_refused_at_construction(ledger: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BudgetSpanProcessor(1.0, ledger=ledger)


def test_a_password_in_a_bad_url_is_not_shown() -> None:
    with pytest.raises(ValueError) as refused:
        BudgetSpanProcessor(1.0, ledger="redis://:hunter2@127.0.0.1:port/0")
    assert "hunter2" not in str(refused.value)
    assert ":***@" in str(refused.value)


def test_a_ledger_that_is_not_a_url_or_a_client_is_refused() -> None:
    with pytest.raises(TypeError, match=r"redis\.Redis client"):
        BudgetSpanProcessor(1.0, ledger=42)


@pytest.mark.parametrize("policy", ["maybe", "OPEN", None])
def test_an_unknown_ledger_error_policy_is_refused(policy: Any) -> None:
    with pytest.raises(ValueError, match="on_ledger_error must be 'open' or 'closed'"):
        BudgetSpanProcessor(1.0, on_ledger_error=policy)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "fast"])
def test_a_bad_ledger_timeout_is_refused(timeout: Any) -> None:
    with pytest.raises(ValueError, match="ledger_timeout"):
        BudgetSpanProcessor(1.0, ledger="redis://127.0.0.1:6379/0", ledger_timeout=timeout)


def test_without_redis_py_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'spendmeter\[redis\]'"):
        BudgetSpanProcessor(1.0, ledger="redis://127.0.0.1:6379/0")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SPENDMETER_BUDGET_LEDGER", "http://:hunter2@cache:6379/0"),
        ("SPENDMETER_BUDGET_LEDGER", "redis://cache:port/0"),
        ("SPENDMETER_BUDGET_LEDGER_ERROR", "maybe"),
        ("SPENDMETER_BUDGET_LEDGER_TIMEOUT", "0"),
    ],
)
def test_a_bad_ledger_variable_fails_instrument_naming_it(
    instrument: Any, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("SPENDMETER_BUDGET_USD", "1")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable) as refused:
        instrument()
    assert "hunter2" not in str(refused.value)
    assert not LiteLLMInstrumentor().is_instrumented_by_opentelemetry


def test_the_ledger_variables_reach_the_processor() -> None:
    settings = config.from_env(
        {
            "SPENDMETER_BUDGET_USD": "2",
            "SPENDMETER_BUDGET_LEDGER": "redis://cache:6380/2",
            "SPENDMETER_BUDGET_LEDGER_ERROR": "closed",
            "SPENDMETER_BUDGET_LEDGER_TIMEOUT": "0.25",
        }
    ).budget
    assert settings is not None
    assert settings.ledger == "redis://cache:6380/2"
    assert settings.on_ledger_error == "closed"
    assert settings.ledger_timeout == 0.25
    processor = BudgetSpanProcessor.from_settings(settings)
    try:
        assert str(processor._ledger) == "redis://cache:6380/2"
        assert processor._ledger.refuses_when_unreachable
    finally:
        processor.shutdown()
