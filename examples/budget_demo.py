"""An app that keeps asking a mocked LLM until its spend budget stops it: no API key needed.

The budget comes from the environment, through zero-code instrumentation:

    LITELLM_LOCAL_MODEL_COST_MAP=True \\
    SPENDMETER_BUDGET_USD=0.0001 SPENDMETER_BUDGET_ACTION=raise \\
    OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \\
    .venv/bin/opentelemetry-instrument python examples/budget_demo.py

The call that crosses the budget raises ``BudgetExceededError`` carrying its answer (it was paid
for, so the app keeps it); the next call is refused before a request leaves the process.
Replies come from LiteLLM's ``mock_response``, priced from LiteLLM's price map as real ones are.
"""

from __future__ import annotations

import sys

import litellm

from spendmeter import BudgetExceededError

MODEL = "gpt-4o-mini"
QUESTION = [{"role": "user", "content": "In one sentence, why do LLM bills surprise people?"}]
ANSWER = "Because every token in and out is billed, and tokens add up faster than people expect."
MAX_CALLS = 1_000  # without a budget (e.g. run without opentelemetry-instrument) stop here


def ask() -> litellm.ModelResponse:
    return litellm.completion(model=MODEL, messages=QUESTION, mock_response=ANSWER)


def main() -> int:
    paid = 0
    while paid < MAX_CALLS:
        try:
            ask()
        except BudgetExceededError as stop:
            if stop.response is None:  # refused: this request never left the process
                print(
                    f"budget_demo: refused after {paid} calls; "
                    f"spent ${stop.total_cost:.9f} of a ${stop.budget:.9f} budget"
                )
                return 0
            print(f"budget_demo: call {paid + 1} crossed the budget; its answer is kept")
        paid += 1
    print(f"budget_demo: {paid} calls and no budget stopped them; is SPENDMETER_BUDGET_USD set?")
    return 1


if __name__ == "__main__":
    sys.exit(main())
