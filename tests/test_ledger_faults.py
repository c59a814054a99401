"""A shared ledger whose Redis fails: killed mid-run, paused (SIGSTOP) past the timeout,
restarted empty. Real LiteLLM calls through the instrumentor, to a fake provider: under
``on_ledger_error="open"`` the app keeps running, under ``"closed"`` it is refused, and either
way the shared total ends equal to what the calls cost once Redis is back."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import litellm
import pytest

from spendmeter import BudgetExceededError, BudgetSpanProcessor
from spendmeter._redis_ledger import RETRY_AFTER
from tests._support import (
    FAKE_MODEL,
    MESSAGES,
    FakeProvider,
    Request,
    Telemetry,
    ask_fake,
    budget_first,
    fake_call_cost,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

# Binary fractions: the fake provider's calls cost exactly, in floats, at these prices.
EXACT_PRICES = {FAKE_MODEL: {"input_cost_per_token": 2**-10, "output_cost_per_token": 2**-9}}
CALL_COST = fake_call_cost(EXACT_PRICES)
TIMEOUT = 0.3
LEDGER_LOGGER = "spendmeter._redis_ledger"


class App:
    """An instrumented app whose budget lives on the test's Redis."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.budget = telemetry.budget

    def ask(self) -> float:
        """One call; how long it took."""
        started = time.monotonic()
        ask_fake()
        return time.monotonic() - started


@pytest.fixture
def app(
    redis_server: RedisServer, fake_provider: FakeProvider, make_telemetry: Any, instrument: Any
) -> Any:
    """``app(policy, budget, url)``: LiteLLM instrumented with a budget on ``url`` (the test's
    Redis by default) ahead of the in-memory exporter."""

    def build(policy: str = "open", budget: float = 100.0, url: str | None = None) -> App:
        first = budget_first(
            budget,
            ledger=url or redis_server.url,
            raise_on_budget=True,
            on_ledger_error=policy,
            ledger_timeout=TIMEOUT,
        )
        return App(instrument(make_telemetry(first=first), pricing=EXACT_PRICES))

    return build


def fleet_total(redis_server: RedisServer) -> float:
    """The shared total as any other process reads it."""
    reader = BudgetSpanProcessor(100.0, ledger=redis_server.url)
    try:
        return reader.total_cost
    finally:
        reader.shutdown()


def back_up(redis_server: RedisServer) -> None:
    """Redis restarted empty, and the ledger's rest after a failure over."""
    redis_server.restart()
    time.sleep(RETRY_AFTER + 0.1)


def ledger_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LEDGER_LOGGER and r.levelno >= logging.WARNING
    ]


# --- open: the app keeps running --------------------------------------------------------------


def test_open_redis_killed_mid_run_calls_go_on_and_the_spend_is_handed_back(
    app: Any,
    redis_server: RedisServer,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="spendmeter")
    shop = app("open")
    for _ in range(3):
        shop.ask()

    redis_server.kill()
    durations = [shop.ask() for _ in range(3)]
    assert max(durations) < TIMEOUT + 0.5  # refused connections fail at once
    assert shop.budget.total_cost == pytest.approx(6 * CALL_COST)  # counted here meanwhile
    warnings = ledger_warnings(caplog)
    assert len(warnings) == 1, warnings  # one warning per outage, not one per call
    assert "cannot be used" in warnings[0] and redis_server.url in warnings[0]

    back_up(redis_server)  # empty: the 3 calls it had counted are gone with it
    shop.ask()

    assert fake_provider.requests == 7
    assert fleet_total(redis_server) == 7 * CALL_COST
    assert shop.budget.request_count == 7


def test_open_redis_paused_past_the_timeout_costs_one_timeout_then_reconciles(
    app: Any, redis_server: RedisServer, fake_provider: FakeProvider
) -> None:
    shop = app("open")
    shop.ask()
    shop.ask()

    redis_server.pause()
    try:
        stalled = shop.ask()
        resting = [shop.ask() for _ in range(3)]  # the ledger rests: no timeout per call
    finally:
        redis_server.resume()
    assert TIMEOUT <= stalled < TIMEOUT + 0.5
    assert max(resting) < 0.1

    time.sleep(RETRY_AFTER + 0.1)
    shop.ask()
    # Commands sent before the pause may have run once Redis resumed: each still counts once.
    assert fleet_total(redis_server) == 7 * CALL_COST
    assert fake_provider.requests == 7


def test_a_redis_restarted_empty_between_calls_gets_every_process_share_back(
    app: Any, redis_server: RedisServer
) -> None:
    shop = app("open")
    other = BudgetSpanProcessor(100.0, ledger=redis_server.url)  # another process of the fleet
    try:
        shop.ask()
        shop.ask()
        other.after_call({"gen_ai.request.model": "other"}, 0.5)
        redis_server.restart()  # empty, and no call saw it down

        shop.ask()
        other.after_call({"gen_ai.request.model": "other"}, 0.25)
        assert fleet_total(redis_server) == 3 * CALL_COST + 0.75
        assert shop.budget.cost_by_model == {FAKE_MODEL: 3 * CALL_COST, "other": 0.75}
    finally:
        other.shutdown()


# --- closed: calls are refused while the ledger cannot be reached ------------------------------


def test_closed_redis_killed_refuses_calls_naming_the_ledger(
    app: Any, redis_server: RedisServer, fake_provider: FakeProvider
) -> None:
    shop = app("closed")
    shop.ask()
    shop.ask()

    redis_server.kill()
    for _ in range(2):
        with pytest.raises(BudgetExceededError, match="cannot be reached") as refused:
            shop.ask()
        assert redis_server.url in str(refused.value)
        assert refused.value.response is None
    assert fake_provider.requests == 2  # nothing left the process

    back_up(redis_server)
    shop.ask()
    assert fleet_total(redis_server) == 3 * CALL_COST


def test_closed_redis_paused_refuses_within_the_timeout(
    app: Any, redis_server: RedisServer, fake_provider: FakeProvider
) -> None:
    shop = app("closed")
    shop.ask()
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BudgetExceededError, match="cannot be reached"):
            shop.ask()
        assert time.monotonic() - started < TIMEOUT + 0.5
    finally:
        redis_server.resume()
    time.sleep(RETRY_AFTER + 0.1)
    shop.ask()
    assert fake_provider.requests == 2
    assert fleet_total(redis_server) == 2 * CALL_COST


def test_a_password_never_reaches_logs_errors_or_spans(
    app: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spendmeter")
    redis_server.client().config_set("requirepass", "the-right-one")
    url = f"redis://:hunter2@127.0.0.1:{redis_server.port}/0"
    shop = app("closed", url=url)
    with pytest.raises(BudgetExceededError) as refused:
        shop.ask()

    assert "hunter2" not in str(refused.value)
    assert f"redis://:***@127.0.0.1:{redis_server.port}/0" in str(refused.value)
    assert "hunter2" not in caplog.text
    assert ledger_warnings(caplog)
    for span in shop.telemetry.spans():
        assert "hunter2" not in str(span.status.description)
        assert "hunter2" not in str(dict(span.attributes or {}))


# --- async: the event loop never waits on Redis -------------------------------------------------


def test_an_async_call_never_blocks_the_event_loop_on_a_stalled_redis(
    redis_server: RedisServer,
) -> None:
    # A loop of the test's own: LiteLLM's logging worker carries its queued tasks onto
    # whatever loop runs a LiteLLM call, and they would hog the loop this test watches.
    budget = BudgetSpanProcessor(
        100.0, ledger=redis_server.url, raise_on_budget=True, ledger_timeout=TIMEOUT
    )
    ticks: list[float] = []

    async def heartbeat() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def calls() -> float:
        await one_async_call(budget, "before-the-pause")
        beating = asyncio.create_task(heartbeat())
        redis_server.pause()
        try:
            started = time.monotonic()
            await one_async_call(budget, "during-the-pause")
            took = time.monotonic() - started
        finally:
            redis_server.resume()
            beating.cancel()
        return took

    try:
        took = asyncio.run(calls())
        assert took >= TIMEOUT  # the call did wait for Redis...
        gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
        assert len(ticks) >= TIMEOUT / 0.02  # ...while the loop kept running
        assert max(gaps) < 0.1

        time.sleep(RETRY_AFTER + 0.1)
        asyncio.run(one_async_call(budget, "after-the-pause"))
        assert fleet_total(redis_server) == 3 * 0.125
    finally:
        budget.shutdown()


async def one_async_call(budget: BudgetSpanProcessor, call_id: str) -> None:
    """One async call as the call path feeds its budget."""
    attributes = {"gen_ai.request.model": "gpt-4o-mini"}
    await budget.abefore_call(attributes, Request(call_id))
    await budget.aafter_call(attributes, 0.125, Request(call_id))


def test_async_litellm_calls_go_on_while_redis_is_paused(
    app: Any, redis_server: RedisServer, fake_provider: FakeProvider
) -> None:
    app("open")

    async def calls() -> None:
        await litellm.acompletion(model=FAKE_MODEL, messages=MESSAGES)
        redis_server.pause()
        try:
            await litellm.acompletion(model=FAKE_MODEL, messages=MESSAGES)
        finally:
            redis_server.resume()
        await asyncio.sleep(RETRY_AFTER + 0.1)
        await litellm.acompletion(model=FAKE_MODEL, messages=MESSAGES)

    asyncio.run(calls())
    assert fake_provider.requests == 3
    assert fleet_total(redis_server) == 3 * CALL_COST
