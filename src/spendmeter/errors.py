"""The one exception spendmeter raises on purpose, and only when the user asked for it."""

from __future__ import annotations

from typing import Any


class BudgetExceededError(Exception):
    """Spend crossed a budget whose processor was built with ``raise_on_budget=True`` (or, with
    ``reserve=True``, a call's worst-case cost did not fit in what is left of it).

    ``response`` is the paid-for response of the call that crossed the budget, so nothing the
    user paid for is lost; it is ``None`` for a call refused before it reached the provider.
    """

    def __init__(
        self,
        budget: float,
        total_cost: float,
        response: Any = None,
        *,
        scope: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.budget = budget
        self.total_cost = total_cost
        self.response = response
        self.scope = scope
        where = f" for {scope}" if scope else ""
        super().__init__(
            reason or f"LLM spend ${total_cost:.6f} exceeds the budget of ${budget:.6f}{where}"
        )
