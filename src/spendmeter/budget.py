"""``BudgetSpanProcessor``: alerts on, or stops, LLM spend past a budget (DESIGN.md section 5).

The processor counts spend through the spend feed (``spendmeter._listeners``), not through
``on_end``: a sampled-out span never reaches a span processor, yet its call was paid for. It is
a ``SpanProcessor`` so that it governs the calls of the ``TracerProvider`` it was added to, and
nothing once that provider shuts down (or the instrumentor is uninstrumented). Its
``on_start``/``on_end`` are the SDK's no-ops, so it can never take a span away from the
processors after it.

Semantics:

- A threshold ``f`` is reached when spend >= ``f * budget``; the budget is passed when spend >
  ``budget``. Both compare with a relative tolerance of 1e-9, so that ten calls of $0.10 reach a
  $1 budget exactly rather than a float rounding step before or after it.
- ``window`` (``"hour"``, ``"day"``, ``"month"``: calendar periods in UTC) starts every ledger
  afresh at each boundary: spend, request counts and alerts. ``history`` is a log of the last
  ``HISTORY_SIZE`` calls and survives window boundaries; only ``reset()`` clears it.
- ``scope`` names a call attribute (e.g. ``user.id``); each of its values gets its own ledger
  with the full ``budget``. Calls without the attribute share one unscoped ledger that has the
  same budget: leaving the attribute out must not be a way around the cap.
- ``reserve=True`` holds back each call's worst-case cost (``spendmeter._estimate``) from the
  moment it is admitted until its cost is known or it fails, and refuses a call that cannot
  fit in what is neither spent nor held back. A reservation is released from the ledger it
  was taken from, so one that outlives its window never touches the next.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeGuard, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.sdk.trace import SpanProcessor

from spendmeter import config
from spendmeter import semconv as sc
from spendmeter._listeners import CallRequest
from spendmeter.errors import BudgetExceededError

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.8, 1.0)
WINDOWS: tuple[str | None, ...] = (None, "hour", "day", "month")
HISTORY_SIZE = 1000
_UNKNOWN_MODEL = "unknown"
_TOLERANCE = 1e-9

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


@dataclass
class _Ledger:
    spent: float = 0.0
    requests: int = 0
    cost_by_model: dict[str, float] = field(default_factory=dict)
    fired: set[float] = field(default_factory=set)
    exceeded: bool = False
    reserved: float = 0.0  # worst-case cost of admitted calls still in flight
    # Spend below this crosses nothing (the next alert or the budget, less the tolerance):
    # most calls skip the threshold checks.
    quiet_below: float = 0.0


@dataclass(frozen=True)
class _Crossings:
    """What one call crossed, collected under the lock and announced outside it."""

    scope: str | None
    spent: float
    fractions: tuple[float, ...]
    exceeded: bool


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

        self._lock = threading.Lock()
        self._window_end = _window_end(self._window, self._now())
        self._ledgers: dict[str | None, _Ledger] = {None: _Ledger()}
        # (timestamp, model, cost, scope) rows: a tuple is cheaper to make on every call than
        # a CallRecord, which `history` builds on demand.
        self._history: deque[tuple[datetime, str, float | None, str | None]] = deque(
            maxlen=HISTORY_SIZE
        )
        self._reservations: dict[CallRequest, tuple[_Ledger, float]] = {}

        self._gauges = _GaugeFeed.for_meter(
            (meter_provider or metrics.get_meter_provider()).get_meter("spendmeter")
        )
        self._gauges.add(self)
        self._governs = True

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
            meter_provider=meter_provider,
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

    # --- the ledger, for the current window -----------------------------------------------

    @property
    def total_cost(self) -> float:
        """USD spent in the current window, across every scope value."""
        with self._current():
            return math.fsum(ledger.spent for ledger in self._ledgers.values())

    @property
    def request_count(self) -> int:
        """Calls finished in the current window, priced or not."""
        with self._current():
            return sum(ledger.requests for ledger in self._ledgers.values())

    @property
    def cost_by_model(self) -> dict[str, float]:
        """USD per request model; an unpriced call adds its model nowhere (never $0)."""
        totals: dict[str, float] = {}
        with self._current():
            for ledger in self._ledgers.values():
                for model, cost in ledger.cost_by_model.items():
                    totals[model] = totals.get(model, 0.0) + cost
        return totals

    @property
    def cost_by_scope(self) -> dict[str | None, float]:
        """USD per scope value; the key ``None`` holds calls without the scope attribute."""
        with self._current():
            return {scope: ledger.spent for scope, ledger in self._ledgers.items()}

    def spent(self, scope_value: str | None = None) -> float:
        """USD spent by one scope value (``None``: calls without it) in the current window."""
        with self._current():
            ledger = self._ledgers.get(scope_value)
            return ledger.spent if ledger else 0.0

    @property
    def reserved(self) -> float:
        """USD held back for calls in flight (``reserve=True``), across every scope value."""
        with self._current():
            return math.fsum(ledger.reserved for ledger in self._ledgers.values())

    @property
    def budget_exceeded(self) -> bool:
        """Whether spend has passed the budget in the current window (for any scope value)."""
        with self._current():
            return any(ledger.exceeded for ledger in self._ledgers.values())

    @property
    def history(self) -> list[CallRecord]:
        """The last ``HISTORY_SIZE`` finished calls, oldest first."""
        with self._lock:
            rows = list(self._history)
        return [CallRecord(*row) for row in rows]

    def reset(self) -> None:
        """Forget all spend, alerts and history, as if the processor were new."""
        with self._lock:
            self._ledgers = {None: _Ledger()}
            self._history.clear()
            self._reservations.clear()

    # --- the spend feed (spendmeter._listeners.SpendListener) -----------------------------

    def before_call(
        self, attributes: Mapping[str, Any], request: CallRequest | None = None
    ) -> None:
        """Refuse the call if its ledger is past the budget and ``raise_on_budget`` is set, or,
        with ``reserve``, if its worst-case cost does not fit; else hold that cost back."""
        if not self._raise_on_budget:
            return
        scope = self._scope_of(attributes)
        # Estimated outside the lock: counting a prompt's tokens takes a while.
        estimate = request.max_cost() if self._reserve and request is not None else None
        with self._current():
            ledger = self._ledgers.get(scope)
            if ledger is not None and ledger.exceeded:
                raise BudgetExceededError(self._budget, ledger.spent, scope=scope)
            if request is not None and estimate is not None:
                self._hold(scope, request, estimate)

    def after_call(
        self, attributes: Mapping[str, Any], cost: float | None, request: CallRequest | None = None
    ) -> None:
        """Count a finished call; raise ``BudgetExceededError`` if it passed a raising budget."""
        scope = self._scope_of(attributes)
        model = str(
            attributes.get(sc.GEN_AI_REQUEST_MODEL)
            or attributes.get(sc.GEN_AI_RESPONSE_MODEL)
            or _UNKNOWN_MODEL
        )
        now = self._now()
        with self._lock:
            self._roll(now)
            if self._reservations:
                self._release(request)
            crossings = self._record(scope, model, cost)
            self._history.append((now, model, cost, scope))
        if crossings is None:
            return
        self._announce(crossings)
        if crossings.exceeded and self._raise_on_budget:
            raise BudgetExceededError(self._budget, crossings.spent, scope=scope)

    def call_failed(self, attributes: Mapping[str, Any], request: CallRequest) -> None:
        """Release what was held back for a call that ended without a response."""
        with self._lock:
            self._release(request)

    # An in-process ledger never waits on anything but its lock: the async feed is the same.
    async def abefore_call(self, attributes: Mapping[str, Any], request: CallRequest) -> None:
        self.before_call(attributes, request)

    async def aafter_call(
        self, attributes: Mapping[str, Any], cost: float | None, request: CallRequest
    ) -> None:
        self.after_call(attributes, cost, request)

    async def acall_failed(self, attributes: Mapping[str, Any], request: CallRequest) -> None:
        self.call_failed(attributes, request)

    # --- SpanProcessor: on_start and on_end stay the SDK's no-ops -------------------------

    @property
    def governs(self) -> bool:
        """Whether the processor still governs its provider's calls: not after ``shutdown()``."""
        return self._governs

    def shutdown(self) -> None:
        self._governs = False
        self._gauges.discard(self)

    # --- internals --------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is timezone.utc:
            return now
        return now.astimezone(timezone.utc) if now.tzinfo else now.replace(tzinfo=timezone.utc)

    @contextmanager
    def _current(self) -> Iterator[None]:
        """Hold the lock, with the ledgers started afresh if a later window has begun."""
        now = self._now()
        with self._lock:
            self._roll(now)
            yield

    def _roll(self, now: datetime) -> None:
        """Start every ledger afresh if ``now`` is past the current window; the caller holds
        the lock. Clocks are read before the lock, so a thread may bring an older time than
        the one that moved the window on: windows only move forward."""
        if now >= self._window_end:
            self._window_end = _window_end(self._window, now)
            self._ledgers = {None: _Ledger()}

    def _scope_of(self, attributes: Mapping[str, Any]) -> str | None:
        if self._scope is None:
            return None
        value = attributes.get(self._scope)
        return None if value is None else str(value)

    def _hold(self, scope: str | None, request: CallRequest, estimate: float) -> None:
        """Hold back a call's worst-case cost, or refuse it; the caller holds the lock."""
        ledger = self._ledgers.setdefault(scope, _Ledger())
        if _passed(ledger.spent + ledger.reserved + estimate, self._budget):
            left = max(self._budget - ledger.spent - ledger.reserved, 0.0)
            where = f" for {self._scope}={scope}" if scope is not None else ""
            raise BudgetExceededError(
                self._budget,
                ledger.spent,
                scope=scope,
                reason=(
                    f"LLM call refused: it may cost up to ${estimate:.6f}, more than the "
                    f"${left:.6f} left of the budget of ${self._budget:.6f}{where}"
                ),
            )
        ledger.reserved += estimate
        self._reservations[request] = (ledger, estimate)

    def _release(self, request: CallRequest | None) -> None:
        """Give back a call's reservation to the ledger it came from; the caller holds the lock."""
        held = self._reservations.pop(request, None) if request is not None else None
        if held is not None:
            ledger, estimate = held
            # Clamped: float sums and differences need not cancel exactly.
            ledger.reserved = max(ledger.reserved - estimate, 0.0)

    def _record(self, scope: str | None, model: str, cost: float | None) -> _Crossings | None:
        """Add one call to its ledger; what it crossed, if anything. The caller holds the lock."""
        ledger = self._ledgers.get(scope)
        if ledger is None:
            ledger = self._ledgers[scope] = _Ledger()
        ledger.requests += 1
        if cost is None:
            return None
        ledger.spent += cost
        ledger.cost_by_model[model] = ledger.cost_by_model.get(model, 0.0) + cost
        if ledger.spent < ledger.quiet_below:
            return None
        # `spent > 0`: a $0 budget is not reached by unpriced or free calls.
        fractions = tuple(
            fraction
            for fraction in self._thresholds
            if fraction not in ledger.fired
            and ledger.spent > 0
            and _reached(ledger.spent, fraction * self._budget)
        )
        ledger.fired.update(fractions)
        exceeded = not ledger.exceeded and _passed(ledger.spent, self._budget)
        ledger.exceeded = ledger.exceeded or exceeded
        ledger.quiet_below = self._next_crossing(ledger) * (1 - 2 * _TOLERANCE)
        if not fractions and not exceeded:
            return None
        return _Crossings(scope, ledger.spent, fractions, exceeded)

    def _next_crossing(self, ledger: _Ledger) -> float:
        """The spend at which the ledger next reaches an alert or passes the budget."""
        limits = [f * self._budget for f in self._thresholds if f not in ledger.fired]
        if not ledger.exceeded:
            limits.append(self._budget)
        return min(limits, default=math.inf)

    def _announce(self, crossings: _Crossings) -> None:
        """Alert outside the lock, so that a callback may call back into the processor."""
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

    def _add_threshold_event(self, fraction: float, crossings: _Crossings) -> None:
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
        with self._current():
            return [
                Observation(self._budget if limit else ledger.spent, self._metric_attributes(scope))
                for scope, ledger in self._ledgers.items()
            ]


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


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


_NEVER = datetime.max.replace(tzinfo=timezone.utc)


def _window_end(window: str | None, now: datetime) -> datetime:
    """When the calendar window (UTC) that holds ``now`` ends."""
    if window == "hour":
        return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if window == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    if window == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return (start + timedelta(days=32)).replace(day=1)
    return _NEVER


def _reached(spent: float, limit: float) -> bool:
    return spent >= limit or math.isclose(spent, limit, rel_tol=_TOLERANCE)


def _passed(spent: float, limit: float) -> bool:
    return spent > limit and not math.isclose(spent, limit, rel_tol=_TOLERANCE)


def _is_number(value: object) -> TypeGuard[numbers.Real]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _checked_budget(budget: object) -> float:
    if not _is_number(budget) or not math.isfinite(budget) or budget < 0:
        raise ValueError(f"budget must be a finite number of USD >= 0, got {budget!r}")
    return float(budget)


def _checked_thresholds(thresholds: Iterable[float]) -> tuple[float, ...]:
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Iterable):
        raise ValueError(f"thresholds must be fractions of the budget, got {thresholds!r}")
    values = tuple(thresholds)
    for value in values:
        if not _is_number(value) or not 0 < value <= 1:
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
