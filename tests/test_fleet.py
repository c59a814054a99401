"""A fleet: four processes of eight threads each share one $0.50 budget on a real Redis.

Each process (tests/fleet_worker.py) instruments LiteLLM with a counting fake provider and a
``BudgetSpanProcessor(ledger=url, raise_on_budget=True)``; a call costs $1/64, so the cap
allows 32 calls. The processes are started once, in parallel (importing LiteLLM takes
seconds), and given one budget after another.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests._support import ROOT
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

PROCESSES, THREADS = 4, 8
BUDGET, CALL_COST = 0.5, 2**-6
CAP = int(BUDGET / CALL_COST)  # 32 calls


class Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fleet_worker"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the fleet worker died"
        return dict(json.loads(line))

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


class FleetOf:
    def __init__(self, workers: list[Worker], url: str) -> None:
        self.workers = workers
        self.url = url

    def all(self, **command: Any) -> list[dict[str, Any]]:
        """Send a command to every process at once; their answers, in order."""
        for worker in self.workers:
            worker.send(**command)
        return [worker.receive() for worker in self.workers]

    def budget(self, name: str, **options: Any) -> None:
        self.all(op="budget", url=self.url, name=name, budget=BUDGET, **options)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetOf]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    workers = [Worker() for _ in range(PROCESSES)]  # they import LiteLLM in parallel
    try:
        with ThreadPoolExecutor(PROCESSES) as pool:
            assert all(ready == {"ready": True} for ready in pool.map(Worker.receive, workers))
        yield FleetOf(workers, server.url)
    finally:
        for worker in workers:
            worker.stop()
        server.kill()


def assert_one_total(fleet: FleetOf, expected: float) -> None:
    reads = fleet.all(op="read")
    assert [read["total_cost"] for read in reads] == [expected] * PROCESSES


def test_without_reserve_the_fleet_overshoots_only_by_the_calls_in_flight(
    fleet: FleetOf,
) -> None:
    fleet.budget("plain")
    results = fleet.all(op="run", threads=THREADS)
    provider_calls = sum(result["provider_calls"] for result in results)
    print(f"\nfleet without reserve: {provider_calls} provider calls, the cap allows {CAP}")

    assert CAP < provider_calls <= CAP + PROCESSES * THREADS - 1
    assert all(result["refused"] == THREADS for result in results)  # every thread, everywhere
    assert sum(result["crossing"] for result in results) == 1
    assert sorted(alert for result in results for alert in result["alerts"]) == [0.5, 0.8, 1.0]
    assert sum(result["exceeded"] for result in results) == 1
    assert_one_total(fleet, provider_calls * CALL_COST)


def test_with_reserve_the_fleet_never_spends_past_the_budget(fleet: FleetOf) -> None:
    fleet.budget("reserved", reserve=True)
    results = fleet.all(op="run", threads=THREADS)
    provider_calls = sum(result["provider_calls"] for result in results)
    print(f"\nfleet with reserve: {provider_calls} provider calls, the cap allows {CAP}")

    assert 0 < provider_calls <= CAP
    assert all(result["refused"] == THREADS for result in results)
    assert all(result["crossing"] == 0 for result in results)
    assert_one_total(fleet, provider_calls * CALL_COST)


def test_a_window_rolls_over_for_the_whole_fleet_at_once(fleet: FleetOf) -> None:
    fleet.budget("hourly", window="hour", now="2025-03-04T10:59:00+00:00")
    first = fleet.all(op="run", threads=THREADS)
    spent_before = sum(result["provider_calls"] for result in first) * CALL_COST
    assert all(read["budget_exceeded"] for read in fleet.all(op="read"))

    fleet.all(op="clock", now="2025-03-04T11:00:00+00:00")
    assert (
        fleet.all(op="read")
        == [{"total_cost": 0.0, "request_count": 0, "budget_exceeded": False}] * PROCESSES
    )
    second = fleet.all(op="run", threads=THREADS)
    provider_calls = sum(result["provider_calls"] for result in second)
    assert provider_calls > CAP  # a whole new budget, passed again
    assert sorted(alert for result in second for alert in result["alerts"]) == [0.5, 0.8, 1.0]
    assert_one_total(fleet, provider_calls * CALL_COST)

    fleet.all(op="clock", now="2025-03-04T10:59:30+00:00")  # a late clock never moves it back
    assert_one_total(fleet, provider_calls * CALL_COST)
    assert spent_before > BUDGET
