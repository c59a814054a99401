"""``BudgetSpanProcessor``: alerts on, or stops, LLM spend past a budget (DESIGN.md section 5).

The processor counts spend through the spend feed (``spendmeter._listeners``), not through
``on_end``: a sampled-out span never reaches a span processor, yet its call was paid for. It is
a ``SpanProcessor`` so that it governs the calls of the ``TracerProvider`` it was added to, and
nothing once that provider shuts down (or the instrumentor is uninstrumented). Its
``on_start``/``on_end`` are the SDK's no-ops, so it can never take a span away from the
processors after it.

The processor is thin: what was spent, held back and crossed lives in a ledger
(``spendmeter._ledger``), in the process or shared on Redis (``spendmeter._redis_ledger``).
The processor checks its options, keeps the history and announces what the ledger reports.

Semantics:

- A threshold ``f`` is reached when spend >= ``f * budget``; the budget is passed when spend >
  ``budget``. Both compare with a relative tolerance of 1e-9, so that ten calls of $0.10 reach a
  $1 budget exactly rather than a float rounding step before or after it.
- ``window`` (``"hour"``, ``"day"``, ``"month"``: calendar periods in UTC) starts every ledger
  afresh at each boundary: spend, request counts and alerts. ``history`` is a log of this
  process's last ``HISTORY_SIZE`` calls and survives window boundaries; only ``reset()`` clears it.
- ``scope`` names a call attribute (e.g. ``user.id``); each of its values gets its own ledger
  with the full ``budget``. Calls without the attribute share one unscoped ledger that has the
  same budget: leaving the attribute out must not be a way around the cap.
- ``reserve=True`` holds back each call's worst-case cost (``spendmeter._estimate``) from the
  moment it is admitted until its cost is known or it fails, and refuses a call that cannot
  fit in what is neither spent nor held back. A reservation is released from the ledger it
  was taken from, so one that outlives its window never touches the next.
- ``ledger="redis://..."`` (or a ``redis.Redis`` client) shares the ledger with every process
  that names the same ledger and ``name``; ``on_ledger_error`` says what happens to calls while
  it cannot be reached (README, "Sharing a budget across a fleet").
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.sdk.trace import SpanProcessor

from spendmeter import _listeners, config
from spendmeter import semconv as sc
from spendmeter._ledger import (
    WINDOWS,
    Crossings,
    Ledger,
    LocalLedger,
    Marks,
    Refusal,
    Snapshot,
    utc,
)
from spendmeter._listeners import CallRequest
from spendmeter._numbers import number
from spendmeter.errors import BudgetExceededError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_THRESHOLDS", "HISTORY_SIZE", "WINDOWS", "BudgetSpanProcessor", "CallRecord"]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.8, 1.0)
HISTORY_SIZE = 1000
LEDGER_ERROR_POLICIES = config.LEDGER_ERROR_POLICIES
DEFAULT_LEDGER_TIMEOUT = config.DEFAULT_LEDGER_TIMEOUT  # seconds, per shared-ledger operation
_UNKNOWN_MODEL = "unknown"

_F = TypeVar("_F", bound=Callable[..., object] | None)
ThresholdCallback = Callable[[float, "BudgetSpanProcessor"], object]
ExceededCallback = Callable[["BudgetSpanProcessor"], object]


@dataclass(frozen=True)
class CallRecord:
    """One finished call, as kept in ``BudgetSpanProcessor.history``."""

    timestamp: datetime
    model: str
    cost: float | None  # None: unpriced, never 0
    scope: str | None


class BudgetSpanProcessor(SpanProcessor):
    """Counts the USD spend of every LLM call and alerts on, or stops, spend past ``budget``.

    Alerts fire once per threshold per window (and per scope value): ``on_threshold(fraction,
    processor)``, a warning on the ``spendmeter`` logger and a ``spendmeter.budget.threshold``
    event on the current span; the ``spendmeter.budget.spent`` and ``spendmeter.budget.limit``
    gauges let an alert rule watch the same numbers. ``on_budget_exceeded(processor)`` fires once
    when spend passes the budget. With ``raise_on_budget=True`` the call that passes the budget
    raises ``BudgetExceededError`` carrying its response, and every later call is refused before
    it leaves the process. ``reserve=True`` (with ``raise_on_budget=True``) also refuses, before
    it is sent, a call whose worst-case cost does not fit in what is left: its prompt counted
    locally plus ``max_tokens`` (else the model's maximum output) at the model's prices. Calls
    whose cost has no bound (unpriced, priced per second) are not held back. A callback that
    raises is logged and ignored.

    ``ledger`` shares the budget across processes and hosts: a ``redis://`` or ``rediss://``
    URL, or a ``redis.Redis`` client (``pip install 'spendmeter[redis]'``). Every process that
    names the same ledger and ``name`` then counts against one total, per scope value and
    window, and the alerts fire once for all of them. While the ledger cannot be reached
    (each operation gives up after ``ledger_timeout`` seconds), ``on_ledger_error="open"`` lets
    calls go and hands their spend to the ledger once it is back; ``"closed"`` refuses them.

    Call ``shutdown()`` (or shut down the ``TracerProvider`` it was added to) to detach it.
    """

    def __init__(
        self,
        budget: float,
        *,
        on_budget_exceeded: ExceededCallback | None = None,
        raise_on_budget: bool = False,
        thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
        on_threshold: ThresholdCallback | None = None,
        window: str | None = None,
        scope: str | None = None,
        name: str = "default",
        meter_provider: MeterProvider | None = None,
        clock: Callable[[], datetime] | None = None,
        reserve: bool = False,
        ledger: Any = None,
        on_ledger_error: str = "open",
        ledger_timeout: float = DEFAULT_LEDGER_TIMEOUT,
    ) -> None:
        self._budget = _checked_budget(budget)
        self._thresholds = _checked_thresholds(thresholds)
        self._window = _checked_window(window)
        self._scope = _checked_name("scope", scope) if scope is not None else None
        self._name = _checked_name("name", name)
        self._on_budget_exceeded = _checked_callback("on_budget_exceeded", on_budget_exceeded)
        self._on_threshold = _checked_callback("on_threshold", on_threshold)
        self._clock = _checked_callback("clock", clock) or _utc_now
        self._raise_on_budget = bool(raise_on_budget)
        self._reserve = bool(reserve)
        if self._reserve and not self._raise_on_budget:
            raise ValueError("reserve=True needs raise_on_budget=True: only it refuses calls")
        self._ledger = self._open_ledger(
            ledger, _checked_policy(on_ledger_error), _checked_timeout(ledger_timeout)
        )
        # Whether calls are asked about before they are sent: a budget that never refuses on
        # spend still must when a closed shared ledger cannot be reached.
        self._admits = self._raise_on_budget or self._ledger.refuses_when_unreachable
        # Whether the ledger is told which call it settles: an id is made only when it is.
        self._settles_by_id = self._reserve or self._ledger.settles_by_id

        self._lock = threading.Lock()
        # (timestamp, model, cost, scope) rows: a tuple is cheaper to make on every call than
        # a CallRecord, which `history` builds on demand.
        self._history: deque[tuple[datetime, str, float | None, str | None]] = deque(
            maxlen=HISTORY_SIZE
        )

        self._gauges = _GaugeFeed.for_meter(
            (meter_provider or metrics.get_meter_provider()).get_meter("spendmeter")
        )
        self._gauges.add(self)
        self._governs = True
        _processors.add(self)

    def _open_ledger(self, ledger: Any, policy: str, timeout: float) -> Ledger:
        marks = Marks.of(self._budget, self._thresholds)
        if ledger is None:
            return LocalLedger(marks, self._window)
        from spendmeter._redis_ledger import RedisLedger

        return RedisLedger(
            ledger,
            name=self._name,
            marks=marks,
            window=self._window,
            policy=policy,
            timeout=timeout,
            announce=self._announce,
        )

    @classmethod
    def from_settings(
        cls, settings: config.BudgetSettings, *, meter_provider: MeterProvider | None = None
    ) -> BudgetSpanProcessor:
        """The processor ``SPENDMETER_BUDGET_USD`` and its companion variables ask for."""
        return cls(
            settings.budget,
            raise_on_budget=settings.raise_on_budget,
            thresholds=DEFAULT_THRESHOLDS if settings.thresholds is None else settings.thresholds,
            window=settings.window,
            scope=settings.scope,
            name=settings.name,
            meter_provider=meter_provider,
            ledger=settings.ledger,
            on_ledger_error=settings.on_ledger_error,
            ledger_timeout=settings.ledger_timeout,
        )

    # --- configuration --------------------------------------------------------------------

    @property
    def budget(self) -> float:
        """The budget in USD, for each scope value when scoped."""
        return self._budget

    @property
    def thresholds(self) -> tuple[float, ...]:
        return self._thresholds

    @property
    def raise_on_budget(self) -> bool:
        return self._raise_on_budget

    @property
    def reserve(self) -> bool:
        return self._reserve

    @property
    def window(self) -> str | None:
        return self._window

    @property
    def scope(self) -> str | None:
        return self._scope

    @property
    def name(self) -> str:
        return self._name

    # --- the ledger, for the current window (the fleet's, when shared) --------------------

    @property
    def total_cost(self) -> float:
        """USD spent in the current window, across every scope value."""
        return math.fsum(totals.spent for totals in self._snapshot().values())

    @property
    def request_count(self) -> int:
        """Calls finished in the current window, priced or not."""
        return sum(totals.requests for totals in self._snapshot().values())

    @property
    def cost_by_model(self) -> dict[str, float]:
        """USD per request model; an unpriced call adds its model nowhere (never $0)."""
        by_model: dict[str, float] = {}
        for totals in self._snapshot().values():
            for model, cost in totals.cost_by_model.items():
                by_model[model] = by_model.get(model, 0.0) + cost
        return by_model

    @property
    def cost_by_scope(self) -> dict[str | None, float]:
        """USD per scope value; the key ``None`` holds calls without the scope attribute."""
        return {scope: totals.spent for scope, totals in self._snapshot().items()}

    def spent(self, scope_value: str | None = None) -> float:
        """USD spent by one scope value (``None``: calls without it) in the current window."""
        totals = self._snapshot().get(scope_value)
        return totals.spent if totals else 0.0

    @property
    def reserved(self) -> float:
        """USD held back for calls in flight (``reserve=True``), across every scope value."""
        return math.fsum(totals.reserved for totals in self._snapshot().values())

    @property
    def budget_exceeded(self) -> bool:
        """Whether spend has passed the budget in the current window (for any scope value)."""
        return any(totals.exceeded for totals in self._snapshot().values())

    @property
    def history(self) -> list[CallRecord]:
        """This process's last ``HISTORY_SIZE`` finished calls, oldest first."""
        with self._lock:
            rows = list(self._history)
        return [CallRecord(*row) for row in rows]

    def reset(self) -> None:
        """Forget all spend, alerts and history, as if the processor were new. A shared
        ledger forgets the current window's spend for every process that shares it."""
        self._ledger.reset(self._now())
        with self._lock:
            self._history.clear()

    # --- the spend feed (spendmeter._listeners.SpendListener) -----------------------------

    def before_call(
        self, attributes: Mapping[str, Any], request: CallRequest | None = None
    ) -> None:
        """Refuse the call if its ledger is past the budget and ``raise_on_budget`` is set, or,
        with ``reserve``, if its worst-case cost does not fit; else hold that cost back."""
        if not self._admits:
            return
        scope = self._scope_of(attributes)
        call_id, estimate = self._holding(request)
        refusal = self._ledger.admit(self._now(), scope, call_id, estimate, self._raise_on_budget)
        if refusal is not None:
            raise self._refused(refusal, scope)

    def after_call(
        self, attributes: Mapping[str, Any], cost: float | None, request: CallRequest | None = None
    ) -> None:
        """Count a finished call; raise ``BudgetExceededError`` if it passed a raising budget."""
        scope, model, now = self._scope_of(attributes), _model_of(attributes), self._now()
        call_id = request.call_id if request is not None and self._settles_by_id else None
        crossings = self._ledger.settle(now, scope, call_id, model, cost)
        self._settled(now, model, cost, scope, crossings)

    def call_failed(self, attributes: Mapping[str, Any], request: CallRequest) -> None:
        """Release what was held back for a call that ended without a response."""
        if self._reserve:
            self._ledger.release(request.call_id)

    async def abefore_call(self, attributes: Mapping[str, Any], request: CallRequest) -> None:
        if not self._admits:
            return
        scope = self._scope_of(attributes)
        call_id, estimate = await self._aholding(request)
        refusal = await self._ledger.aadmit(
            self._now(), scope, call_id, estimate, self._raise_on_budget
        )
        if refusal is not None:
            raise self._refused(refusal, scope)

    async def aafter_call(
        self, attributes: Mapping[str, Any], cost: float | None, request: CallRequest
    ) -> None:
        scope, model, now = self._scope_of(attributes), _model_of(attributes), self._now()
        call_id = request.call_id if self._settles_by_id else None
        crossings = await self._ledger.asettle(now, scope, call_id, model, cost)
        self._settled(now, model, cost, scope, crossings)

    async def acall_failed(self, attributes: Mapping[str, Any], request: CallRequest) -> None:
        if self._reserve:
            await self._ledger.arelease(request.call_id)

    # --- SpanProcessor: on_start and on_end stay the SDK's no-ops -------------------------

    @property
    def governs(self) -> bool:
        """Whether the processor still governs its provider's calls: not after ``shutdown()``."""
        return self._governs

    def shutdown(self) -> None:
        self._governs = False
        _listeners.stopped()
        self._gauges.discard(self)
        self._ledger.close()

    # --- internals --------------------------------------------------------------------------

    def _now(self) -> datetime:
        if self._clock is _utc_now:  # the default clock, read without a call of its own
            return datetime.now(timezone.utc)
        return utc(self._clock())

    def _snapshot(self) -> Snapshot:
        return self._ledger.snapshot(self._now())

    def _scope_of(self, attributes: Mapping[str, Any]) -> str | None:
        if self._scope is None:
            return None
        value = attributes.get(self._scope)
        return None if value is None else str(value)

    def _holding(self, request: CallRequest | None) -> tuple[str | None, float | None]:
        """The call's id and what to hold back for it; counting a prompt's tokens takes a
        while, so it is done before the ledger is asked."""
        if not self._reserve or request is None:
            return None, None
        return request.call_id, request.max_cost()

    async def _aholding(self, request: CallRequest | None) -> tuple[str | None, float | None]:
        if not self._reserve or request is None:
            return None, None
        return request.call_id, await request.amax_cost()

    def _settled(
        self,
        now: datetime,
        model: str,
        cost: float | None,
        scope: str | None,
        crossings: Crossings | None,
    ) -> None:
        with self._lock:
            self._history.append((now, model, cost, scope))
        if crossings is None:
            return
        self._announce(crossings)
        if crossings.exceeded and self._raise_on_budget:
            raise BudgetExceededError(self._budget, crossings.spent, scope=scope)

    def _refused(self, refusal: Refusal, scope: str | None) -> BudgetExceededError:
        where = f" for {self._scope}={scope}" if scope is not None else ""
        reason = None
        if refusal.kind == "no_room":
            reason = (
                f"LLM call refused: it may cost up to ${refusal.estimate:.6f}, more than the "
                f"${refusal.left:.6f} left of the budget of ${self._budget:.6f}{where}"
            )
        elif refusal.kind == "unreachable":
            reason = (
                f"LLM call refused: the {self._name!r} budget's ledger "
                f"{self._ledger} cannot be reached (on_ledger_error='closed')"
            )
        return BudgetExceededError(self._budget, refusal.spent, scope=scope, reason=reason)

    def _announce(self, crossings: Crossings) -> None:
        """Alert outside any lock, so that a callback may call back into the processor."""
        where = f" for {self._scope}={crossings.scope}" if crossings.scope is not None else ""
        for fraction in crossings.fractions:
            logger.warning(
                "LLM spend $%.6f reached %g%% of the %r budget of $%.6f%s",
                crossings.spent,
                fraction * 100,
                self._name,
                self._budget,
                where,
            )
            self._add_threshold_event(fraction, crossings)
            self._invoke(self._on_threshold, fraction, self)
        if crossings.exceeded:
            logger.warning(
                "LLM spend $%.6f exceeds the %r budget of $%.6f%s",
                crossings.spent,
                self._name,
                self._budget,
                where,
            )
            self._invoke(self._on_budget_exceeded, self)

    def _add_threshold_event(self, fraction: float, crossings: Crossings) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                sc.EVENT_BUDGET_THRESHOLD,
                {
                    **self._metric_attributes(crossings.scope),
                    sc.SPENDMETER_BUDGET_FRACTION: fraction,
                    sc.SPENDMETER_BUDGET_SPENT: crossings.spent,
                    sc.SPENDMETER_BUDGET_LIMIT: self._budget,
                },
            )

    @staticmethod
    def _invoke(callback: Callable[..., object] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            logger.exception("spendmeter: budget callback %r raised; ignored", callback)

    def _metric_attributes(self, scope: str | None) -> dict[str, str]:
        attributes = {sc.SPENDMETER_BUDGET_NAME: self._name}
        if scope is not None:
            attributes[sc.SPENDMETER_BUDGET_SCOPE] = scope
        return attributes

    def _observations(self, limit: bool) -> list[Observation]:
        return [
            Observation(self._budget if limit else totals.spent, self._metric_attributes(scope))
            for scope, totals in self._snapshot().items()
        ]


def _model_of(attributes: Mapping[str, Any]) -> str:
    return str(
        attributes.get(sc.GEN_AI_REQUEST_MODEL)
        or attributes.get(sc.GEN_AI_RESPONSE_MODEL)
        or _UNKNOWN_MODEL
    )


class _GaugeFeed:
    """The budget gauges of one meter, observing every live processor on it.

    A meter hands back the first instrument of a name to later registrations, so gauges made
    per processor would leave all but the first processor of a meter unobserved.
    """

    def __init__(self, meter: Meter) -> None:
        self._processors: set[BudgetSpanProcessor] = set()
        meter.create_observable_gauge(
            sc.METRIC_BUDGET_SPENT,
            callbacks=[self._spent],
            unit="USD",
            description="LLM spend counted against a budget in its current window",
        )
        meter.create_observable_gauge(
            sc.METRIC_BUDGET_LIMIT,
            callbacks=[self._limit],
            unit="USD",
            description="The LLM spend budget",
        )

    @classmethod
    def for_meter(cls, meter: Meter) -> _GaugeFeed:
        with _feeds_lock:
            feed = _feeds.get(meter)
            if feed is None:
                feed = _feeds[meter] = cls(meter)
            return feed

    def add(self, processor: BudgetSpanProcessor) -> None:
        with _feeds_lock:
            self._processors.add(processor)

    def discard(self, processor: BudgetSpanProcessor) -> None:
        with _feeds_lock:
            self._processors.discard(processor)

    def _live(self) -> list[BudgetSpanProcessor]:
        with _feeds_lock:
            return list(self._processors)

    def _spent(self, _options: CallbackOptions) -> list[Observation]:
        return [point for p in self._live() for point in p._observations(limit=False)]

    def _limit(self, _options: CallbackOptions) -> list[Observation]:
        return [point for p in self._live() for point in p._observations(limit=True)]


_feeds_lock = threading.Lock()
_feeds: weakref.WeakKeyDictionary[Meter, _GaugeFeed] = weakref.WeakKeyDictionary()
_processors: weakref.WeakSet[BudgetSpanProcessor] = weakref.WeakSet()


def _start_afresh_in_child() -> None:
    """After fork(): ``history`` is the child's own, so it starts empty (an in-process ledger
    starts empty too, in spendmeter._ledger). Locks another thread of the parent may have held
    at the fork are made anew."""
    global _feeds_lock
    _feeds_lock = threading.Lock()
    for processor in list(_processors):
        processor._lock = threading.Lock()
        processor._history.clear()


os.register_at_fork(after_in_child=_start_afresh_in_child)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _checked_budget(budget: object) -> float:
    value = number(budget)
    if value is None or value < 0:
        raise ValueError(f"budget must be a finite number of USD >= 0, got {budget!r}")
    return float(value)


def _checked_thresholds(thresholds: Iterable[float]) -> tuple[float, ...]:
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Iterable):
        raise ValueError(f"thresholds must be fractions of the budget, got {thresholds!r}")
    values = tuple(thresholds)
    for value in values:
        fraction = number(value)
        if fraction is None or not 0 < fraction <= 1:
            raise ValueError(f"each threshold must be a fraction in (0, 1], got {value!r}")
    return tuple(sorted({float(value) for value in values}))


def _checked_window(window: str | None) -> str | None:
    if window not in WINDOWS:
        raise ValueError(f"window must be None, 'hour', 'day' or 'month', got {window!r}")
    return window


def _checked_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _checked_callback(what: str, callback: _F) -> _F:
    if callback is not None and not callable(callback):
        raise TypeError(f"{what} must be callable, got {callback!r}")
    return callback


def _checked_policy(policy: object) -> str:
    if policy not in LEDGER_ERROR_POLICIES:
        raise ValueError(f"on_ledger_error must be 'open' or 'closed', got {policy!r}")
    return str(policy)


def _checked_timeout(timeout: object) -> float:
    seconds = number(timeout)
    if seconds is None or seconds <= 0:
        raise ValueError(f"ledger_timeout must be a number of seconds > 0, got {timeout!r}")
    return float(seconds)
