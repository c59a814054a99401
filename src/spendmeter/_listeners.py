"""The spend feed: how one call tells the budgets of its ``TracerProvider`` what it costs.

A budget governs the calls traced through the provider it was added to. Budgets are found on
the provider at call time rather than through ``SpanProcessor.on_end``: a sampled-out span never
reaches a processor, and neither does a call made under ``suppress_instrumentation()``, yet
both were paid for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


class CallRequest(Protocol):
    """One call, the same object from ``before_call`` to ``after_call`` or ``call_failed``."""

    @property
    def call_id(self) -> str:
        """Unique per call: what a shared ledger settles a call exactly once by."""

    def max_cost(self) -> float | None:
        """The most the call can cost (computed on demand); ``None`` when it has no bound."""

    async def amax_cost(self) -> float | None:
        """``max_cost`` for an async call, computed without holding up its event loop."""


@runtime_checkable
class SpendListener(Protocol):
    """What a budget hears of each call it governs. The ``a``-methods are for async calls,
    so that a ledger on the network never blocks an event loop."""

    @property
    def governs(self) -> bool:
        """False once the budget was shut down: it then governs nothing."""

    def shutdown(self) -> None:
        """Detach the budget: from then on it governs nothing."""

    def before_call(self, attributes: Mapping[str, Any], request: CallRequest) -> None:
        """Called before a request leaves the process; may raise ``BudgetExceededError``."""

    def after_call(
        self, attributes: Mapping[str, Any], cost: float | None, request: CallRequest
    ) -> None:
        """Called once a call's cost is known (``None`` when unpriced); may raise
        ``BudgetExceededError`` when this call crossed a budget that raises."""

    def call_failed(self, attributes: Mapping[str, Any], request: CallRequest) -> None:
        """Called when an admitted call ends without a response (it failed, or a budget
        refused it), so that whatever ``before_call`` held back for it is released."""

    async def abefore_call(self, attributes: Mapping[str, Any], request: CallRequest) -> None: ...

    async def aafter_call(
        self, attributes: Mapping[str, Any], cost: float | None, request: CallRequest
    ) -> None: ...

    async def acall_failed(self, attributes: Mapping[str, Any], request: CallRequest) -> None: ...


_NONE: tuple[SpendListener, ...] = ()
# The span processors a provider last had, the count of budgets stopped by then, and the live
# budgets among them: providers add processors by replacing their tuple, and a budget that
# stops says so (`stopped`), so an unchanged pair means unchanged budgets.
_cache: dict[int, tuple[tuple[Any, ...], int, tuple[SpendListener, ...]]] = {}
_stops = 0


def stopped() -> None:
    """A budget stopped governing (``shutdown``): look for live budgets afresh."""
    global _stops
    _stops += 1


def budgets_of(provider: Any) -> tuple[SpendListener, ...]:
    """The live budgets added to ``provider`` (an SDK ``TracerProvider``), in the order added."""
    processors = _processors_of(provider)
    if not processors:
        return _NONE
    cached = _cache.get(id(provider))
    if cached is not None and cached[0] is processors and cached[1] == _stops:
        return cached[2]
    if len(_cache) > 64:  # providers come and go in test suites; a handful live at once
        _cache.clear()
    live = tuple(p for p in processors if isinstance(p, SpendListener) and p.governs) or _NONE
    _cache[id(provider)] = (processors, _stops, live)
    return live


def _processors_of(provider: Any) -> tuple[Any, ...]:
    # The SDK keeps a provider's processors in a private tuple and has no public way to list
    # them; the SDK's two multi-processors both hold `_span_processors`.
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", None)
    return processors if isinstance(processors, tuple) else ()
