"""The spend feed: how the instrumentor tells budgets about every call.

Budgets listen here rather than in ``SpanProcessor.on_end`` because a sampled-out span never
reaches a processor, and spend must be counted and capped for every call.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol


class CallRequest(Protocol):
    """One call, the same object from ``before_call`` to ``after_call`` or ``call_failed``."""

    def max_cost(self) -> float | None:
        """The most the call can cost (computed on demand); ``None`` when it has no bound."""


class SpendListener(Protocol):
    def before_call(
        self, attributes: Mapping[str, Any], request: CallRequest | None = None
    ) -> None:
        """Called before a request leaves the process; may raise ``BudgetExceededError``."""

    def after_call(
        self, attributes: Mapping[str, Any], cost: float | None, request: CallRequest | None = None
    ) -> None:
        """Called once a call's cost is known (``None`` when unpriced); may raise
        ``BudgetExceededError`` when this call crossed a budget that raises."""

    def call_failed(self, attributes: Mapping[str, Any], request: CallRequest) -> None:
        """Called when an admitted call ends without a response (it failed, or a budget
        refused it), so that whatever ``before_call`` held back for it is released."""


_lock = threading.Lock()
# Copy-on-write: the per-call path reads the tuple without taking the lock.
_listeners: tuple[SpendListener, ...] = ()


def subscribe(listener: SpendListener) -> None:
    global _listeners
    with _lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)


def unsubscribe(listener: SpendListener) -> None:
    global _listeners
    with _lock:
        _listeners = tuple(item for item in _listeners if item is not listener)


def listeners() -> tuple[SpendListener, ...]:
    return _listeners
