"""What a shared budget ledger adds to each LLM call: Redis on loopback, sync and async, next
to the in-process ledger, in one interleaved run.

One command, from the repository root, in the project's venv (``make .venv/bin/activate``)::

    .venv/bin/python benchmarks/ledger.py            # starts its own redis-server on loopback
    .venv/bin/python benchmarks/ledger.py --url redis://host:6379/0

It prints a table and writes it as JSON to ``benchmarks/results/ledger.json`` (``--out``).

Each contender is a ``BudgetSpanProcessor`` fed as the call path feeds it, with a budget never
reached: ``alert`` mode settles each call (one script), ``raise`` mode also admits it first
(two scripts). The time of those feed calls is all a budget adds to a call. Contenders take
turns, a short batch each per round, so that machine drift hits all of them alike; a
contender's figure is the median over rounds of its mean time per call in a batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spendmeter import BudgetSpanProcessor

ATTRIBUTES = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}
COST = 0.000125


@dataclass
class Request:
    call_id: str

    def max_cost(self) -> float | None:
        return None

    async def amax_cost(self) -> float | None:
        return None


class Contender:
    def __init__(self, label: str, ledger: str | None, mode: str, is_async: bool) -> None:
        self.label, self.mode, self.is_async = label, mode, is_async
        self.ledger = "redis" if ledger else "in-process"
        self.processor = BudgetSpanProcessor(
            1e12,
            ledger=ledger,
            name=f"bench-{label}",
            raise_on_budget=mode == "raise",
        )
        self.samples: list[float] = []
        self._ids = iter(range(1, 10**12))

    def batch(self, calls: int, loop: asyncio.AbstractEventLoop) -> None:
        started = time.perf_counter()
        if self.is_async:
            loop.run_until_complete(self._acalls(calls))
        else:
            for _ in range(calls):
                request = Request(f"{self.label}-{next(self._ids)}")
                self.processor.before_call(ATTRIBUTES, request)
                self.processor.after_call(ATTRIBUTES, COST, request)
        self.samples.append((time.perf_counter() - started) / calls)

    async def _acalls(self, calls: int) -> None:
        for _ in range(calls):
            request = Request(f"{self.label}-{next(self._ids)}")
            await self.processor.abefore_call(ATTRIBUTES, request)
            await self.processor.aafter_call(ATTRIBUTES, COST, request)

    def row(self) -> dict[str, Any]:
        return {
            "contender": self.label,
            "ledger": self.ledger,
            "mode": self.mode,
            "async": self.is_async,
            "median_us_per_call": statistics.median(self.samples) * 1e6,
            "p90_us_per_call": statistics.quantiles(self.samples, n=10)[-1] * 1e6,
            "rounds": len(self.samples),
        }


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: run make redis, or pass --url")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return server, f"redis://127.0.0.1:{port}/0"


def measure(url: str, rounds: int, calls: int) -> list[dict[str, Any]]:
    contenders = [
        Contender(f"{where}-{mode}-{kind}", ledger, mode, kind == "async")
        for where, ledger in (("in-process", None), ("redis", url))
        for mode in ("alert", "raise")
        for kind in ("sync", "async")
    ]
    loop = asyncio.new_event_loop()
    try:
        for contender in contenders:  # warm up: connections opened, scripts loaded
            contender.batch(calls, loop)
            contender.samples.clear()
        for index in range(rounds):
            # Alternate the order each round, so that no contender always follows another.
            ordered = contenders if index % 2 == 0 else contenders[::-1]
            for contender in ordered:
                contender.batch(calls, loop)
    finally:
        loop.close()
        for contender in contenders:
            contender.processor.shutdown()
    return [contender.row() for contender in contenders]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'ledger':<11} {'mode':<6} {'feed':<6} {'median µs/call':>15} {'p90 µs/call':>12}",
        "-" * 54,
    ]
    for row in rows:
        lines.append(
            f"{row['ledger']:<11} {row['mode']:<6} {'async' if row['async'] else 'sync':<6} "
            f"{row['median_us_per_call']:>15.1f} {row['p90_us_per_call']:>12.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a Redis to measure against (default: start one)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200, help="calls per batch")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ledger.json"))
    args = parser.parse_args(argv)

    stop: Callable[[], None] = lambda: None  # noqa: E731
    url = args.url
    with tempfile.TemporaryDirectory() as directory:
        if url is None:
            server, url = start_redis(directory)
            stop = server.kill
        try:
            rows = measure(url, args.rounds, args.calls)
        finally:
            stop()
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "rounds": args.rounds,
                "calls_per_batch": args.calls,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
