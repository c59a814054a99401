"""spendmeter: see and cap what LLM calls cost, with OpenTelemetry.

``LiteLLMInstrumentor`` turns every LiteLLM call into a GenAI span carrying tokens and cost in
USD, and records cost, token and duration metrics. ``BudgetSpanProcessor`` alerts on, or stops,
spend past a budget. ``SpendSummaryReader`` prints a table of spend when the app exits.
"""

from spendmeter.budget import BudgetSpanProcessor
from spendmeter.errors import BudgetExceededError
from spendmeter.instrumentor import LiteLLMInstrumentor
from spendmeter.summary import SpendSummaryReader

__all__ = [
    "BudgetExceededError",
    "BudgetSpanProcessor",
    "LiteLLMInstrumentor",
    "SpendSummaryReader",
]
