"""One process of a fleet sharing a budget on Redis (tests/test_fleet.py drives it, as
``python -m tests.fleet_worker`` from the repository's root).

It instruments LiteLLM with a counting fake provider, says ``{"ready": true}``, then obeys one
JSON command per stdin line and answers each with one JSON line:

- ``{"op": "budget", "url", "name", "budget", "reserve", "window", "now"}``: a fresh
  ``BudgetSpanProcessor(ledger=url, raise_on_budget=True)`` replaces the last one;
- ``{"op": "clock", "now"}``: the budget's clock reads ``now`` (ISO 8601) from then on;
- ``{"op": "run", "threads"}``: that many threads call LiteLLM until each is refused;
- ``{"op": "read"}``: the budget's totals, as this process sees them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from contextlib import ExitStack
from datetime import datetime
from typing import Any

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import litellm

from spendmeter import BudgetExceededError, BudgetSpanProcessor
from tests._support import Alerts, FakeProvider, Telemetry, registered_provider

MODEL = "fleetllm/fake-model"
# One prompt and one completion token at 2**-7 each: a call costs $1/64, exactly.
PRICES = {MODEL: {"input_cost_per_token": 2**-7, "output_cost_per_token": 2**-7}}


class Fleet:
    def __init__(self) -> None:
        self.provider = FakeProvider(
            usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        )
        # Registered for the process's life: the context it is registered in is kept open.
        self.registered = ExitStack()
        self.registered.enter_context(registered_provider("fleetllm", self.provider))
        self.telemetry = Telemetry.build().instrument(pricing=PRICES)
        self.now = datetime.now().astimezone()
        self.budget: BudgetSpanProcessor | None = None
        self.alerts = Alerts()

    def new_budget(self, command: dict[str, Any]) -> dict[str, Any]:
        if self.budget is not None:
            self.budget.shutdown()
        self.clock(command)
        self.budget = BudgetSpanProcessor(
            command["budget"],
            ledger=command["url"],
            name=command["name"],
            raise_on_budget=True,
            reserve=command.get("reserve", False),
            window=command.get("window"),
            clock=lambda: self.now,
            on_threshold=self.alerts.on_threshold,
            on_budget_exceeded=self.alerts.on_budget_exceeded,
            meter_provider=self.telemetry.meter_provider,
        )
        self.telemetry.tracer_provider.add_span_processor(self.budget)
        return {}

    def clock(self, command: dict[str, Any]) -> dict[str, Any]:
        if command.get("now"):
            self.now = datetime.fromisoformat(command["now"])
        return {}

    def run(self, command: dict[str, Any]) -> dict[str, Any]:
        self.provider.requests = 0
        self.alerts.clear()
        outcome = {"paid": 0, "crossing": 0, "refused": 0}
        lock = threading.Lock()

        def spend() -> None:
            while True:
                try:
                    litellm.completion(
                        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1
                    )
                    paid = "paid"
                except BudgetExceededError as error:
                    paid = "crossing" if error.response is not None else "refused"
                with lock:
                    outcome[paid] += 1
                if paid == "refused":
                    return

        threads = [threading.Thread(target=spend) for _ in range(command["threads"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {
            **outcome,
            "provider_calls": self.provider.requests,
            "alerts": self.alerts.fractions,
            "exceeded": len(self.alerts.exceeded),
        }

    def read(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.budget is not None
        return {
            "total_cost": self.budget.total_cost,
            "request_count": self.budget.request_count,
            "budget_exceeded": self.budget.budget_exceeded,
        }


def main() -> None:
    fleet = Fleet()
    ops = {"budget": fleet.new_budget, "clock": fleet.clock, "run": fleet.run, "read": fleet.read}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        print(json.dumps(ops[command["op"]](command)), flush=True)


if __name__ == "__main__":
    main()
