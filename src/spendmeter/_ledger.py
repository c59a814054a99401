"""Ledger arithmetic shared by every ledger, and the ledger that lives in the process.

A ledger holds, per window and per scope value, what a budget has spent, what it holds back
for calls in flight, which alerts have fired and whether the budget was passed. The rules that
decide a crossing live here once, in :class:`Marks`: the in-process ledger compares spend with
its numbers under a lock, the Redis ledger (``spendmeter._redis_ledger``) compares the same
numbers inside its Lua scripts, so both decide alike and neither repeats the tolerance rules.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol

WINDOWS: tuple[str | None, ...] = (None, "hour", "day", "month")
# Spend within this relative distance of a limit counts as on it: ten calls of $0.10 reach a
# $1 budget exactly rather than a float rounding step before or after it.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Marks:
    """The spend at which a ledger crosses each of its limits, tolerance included.

    A threshold ``f`` is reached when spend >= ``f * budget`` and the budget is passed when
    spend > ``budget``, both up to ``TOLERANCE``; precomputed, each test is one comparison,
    which a Lua script can make as well as Python.
    """

    budget: float
    ceiling: float  # the most spend that has not passed the budget
    alerts: tuple[tuple[float, float], ...]  # (fraction, the spend that reaches it), ascending

    @classmethod
    def of(cls, budget: float, thresholds: Iterable[float]) -> Marks:
        return cls(
            budget=budget,
            ceiling=budget / (1 - TOLERANCE),
            alerts=tuple((f, f * budget * (1 - TOLERANCE)) for f in sorted(thresholds)),
        )

    def passed(self, spent: float) -> bool:
        return spent > self.ceiling

    def fits(self, spent: float, reserved: float, estimate: float) -> bool:
        """Whether a call that may cost ``estimate`` can go without passing the budget."""
        return spent + reserved + estimate <= self.ceiling

    def reached(self, spent: float, fired: Iterable[float]) -> tuple[float, ...]:
        """The fractions ``spent`` reaches that have not fired yet. ``spent > 0``: a $0 budget
        is not reached by unpriced or free calls."""
        if spent <= 0:
            return ()
        return tuple(f for f, mark in self.alerts if f not in fired and spent >= mark)

    def quiet_below(self, fired: Iterable[float], exceeded: bool) -> float:
        """Spend below this crosses nothing, so most calls can skip the threshold checks."""
        fired = set(fired)
        marks = [mark for f, mark in self.alerts if f not in fired]
        if not exceeded:
            marks.append(self.ceiling)
        return min(marks, default=math.inf)


@dataclass(frozen=True)
class Window:
    """One calendar window (UTC); ``label`` names it in shared keys."""

    start: datetime
    end: datetime
    label: str

    @property
    def bounded(self) -> bool:
        return self.end is not _NEVER

    def seconds_left(self, now: datetime) -> float:
        return max((self.end - now).total_seconds(), 0.0)


_NEVER = datetime.max.replace(tzinfo=timezone.utc)
_FOREVER = Window(datetime.min.replace(tzinfo=timezone.utc), _NEVER, "all")
_LABELS = {"hour": "%Y%m%dT%H", "day": "%Y%m%d", "month": "%Y%m"}


def window_of(window: str | None, now: datetime) -> Window:
    """The calendar window (UTC) of kind ``window`` that holds ``now``."""
    if window == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif window == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif window == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        return _FOREVER
    return Window(start, end, start.strftime(_LABELS[window]))


class Windows:
    """The window calls count in now. It only moves forward: clocks are read before a lock is
    taken, so a thread may bring an older time than the one that moved the window on. Not
    thread-safe: its ledger serializes the calls."""

    def __init__(self, window: str | None) -> None:
        self.kind = window
        self._current = window_of(window, datetime.min.replace(tzinfo=timezone.utc))

    def current(self, now: datetime) -> Window:
        if now >= self._current.end:
            self._current = window_of(self.kind, now)
        return self._current


def utc(now: datetime) -> datetime:
    """``now`` as an aware UTC time; a naive time is taken to be UTC already."""
    if now.tzinfo is timezone.utc:
        return now
    return now.astimezone(timezone.utc) if now.tzinfo else now.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Crossings:
    """What one settlement crossed: announced by the budget, once, outside any lock."""

    scope: str | None
    spent: float
    fractions: tuple[float, ...]
    exceeded: bool


@dataclass(frozen=True)
class Refusal:
    """Why a ledger refuses a call: ``exceeded`` (the budget was passed), ``no_room`` (its
    worst case does not fit in what is left) or ``unreachable`` (a shared ledger that cannot
    be reached, under the ``closed`` policy)."""

    kind: str
    spent: float = 0.0
    left: float = 0.0
    estimate: float = 0.0


@dataclass(frozen=True)
class ScopeTotals:
    """One scope value's ledger in the current window, as read."""

    spent: float = 0.0
    requests: int = 0
    reserved: float = 0.0
    exceeded: bool = False
    cost_by_model: Mapping[str, float] = field(default_factory=dict)


Snapshot = dict[str | None, ScopeTotals]


class Ledger(Protocol):
    """What a ``BudgetSpanProcessor`` asks of its ledger. ``now`` is the budget's clock, in
    UTC; ``call_id`` is ``None`` for a call fed without a request (it holds nothing back)."""

    @property
    def refuses_when_unreachable(self) -> bool:
        """Whether ``admit`` must be asked even by a budget that never refuses on spend."""

    @property
    def settles_by_id(self) -> bool:
        """Whether ``settle`` needs a call's id even when the call held nothing back: a shared
        ledger settles each call once, by its id."""

    def admit(
        self,
        now: datetime,
        scope: str | None,
        call_id: str | None,
        estimate: float | None,
        enforce: bool,
    ) -> Refusal | None:
        """Refuse the call (``enforce``: if the budget was passed), or hold ``estimate`` back."""

    def settle(
        self, now: datetime, scope: str | None, call_id: str | None, model: str, cost: float | None
    ) -> Crossings | None:
        """Count a finished call (``cost`` ``None``: unpriced) and give back what it held."""

    def release(self, call_id: str) -> None:
        """Give back what a call that ended without a response held."""

    def snapshot(self, now: datetime) -> Snapshot:
        """Every scope value's ledger in the current window."""

    def reset(self, now: datetime) -> None:
        """Forget the current window's spend and alerts."""

    async def aadmit(
        self,
        now: datetime,
        scope: str | None,
        call_id: str | None,
        estimate: float | None,
        enforce: bool,
    ) -> Refusal | None: ...

    async def asettle(
        self, now: datetime, scope: str | None, call_id: str | None, model: str, cost: float | None
    ) -> Crossings | None: ...

    async def arelease(self, call_id: str) -> None: ...

    def close(self) -> None:
        """The budget is shut down: hand over what is still owed, if anything."""


@dataclass
class _Scope:
    spent: float = 0.0
    requests: int = 0
    cost_by_model: dict[str, float] = field(default_factory=dict)
    fired: set[float] = field(default_factory=set)
    exceeded: bool = False
    reserved: float = 0.0  # worst-case cost of admitted calls still in flight
    quiet_below: float = 0.0


class LocalLedger:
    """The ledger in the process: one lock, one dict of scope values per window."""

    refuses_when_unreachable = False
    settles_by_id = False

    def __init__(self, marks: Marks, window: str | None) -> None:
        self._marks = marks
        self._windows = Windows(window)
        self._lock = threading.Lock()
        self._window = self._windows.current(datetime.min.replace(tzinfo=timezone.utc))
        self._scopes: dict[str | None, _Scope] = {None: _Scope()}
        # A hold is given back to the ledger it was taken from, so one that outlives its
        # window never touches the next.
        self._holds: dict[str, tuple[_Scope, float]] = {}
        _local_ledgers.add(self)

    def admit(
        self,
        now: datetime,
        scope: str | None,
        call_id: str | None,
        estimate: float | None,
        enforce: bool,
    ) -> Refusal | None:
        with self._lock:
            self._roll(now)
            ledger = self._scopes.get(scope)
            if enforce and ledger is not None and ledger.exceeded:
                return Refusal("exceeded", ledger.spent)
            if call_id is None or estimate is None:
                return None
            ledger = ledger or self._scopes.setdefault(scope, _Scope())
            if not self._marks.fits(ledger.spent, ledger.reserved, estimate):
                left = max(self._marks.budget - ledger.spent - ledger.reserved, 0.0)
                return Refusal("no_room", ledger.spent, left, estimate)
            ledger.reserved += estimate
            self._holds[call_id] = (ledger, estimate)
            return None

    def settle(
        self, now: datetime, scope: str | None, call_id: str | None, model: str, cost: float | None
    ) -> Crossings | None:
        with self._lock:
            self._roll(now)
            if self._holds and call_id is not None:
                self._give_back(call_id)
            ledger = self._scopes.get(scope)
            if ledger is None:
                ledger = self._scopes[scope] = _Scope()
            ledger.requests += 1
            if cost is None:
                return None
            ledger.spent += cost
            ledger.cost_by_model[model] = ledger.cost_by_model.get(model, 0.0) + cost
            if ledger.spent < ledger.quiet_below:
                return None
            return self._crossings(scope, ledger)

    def release(self, call_id: str) -> None:
        with self._lock:
            self._give_back(call_id)

    def snapshot(self, now: datetime) -> Snapshot:
        with self._lock:
            self._roll(now)
            return {
                scope: ScopeTotals(
                    ledger.spent,
                    ledger.requests,
                    ledger.reserved,
                    ledger.exceeded,
                    dict(ledger.cost_by_model),
                )
                for scope, ledger in self._scopes.items()
            }

    def reset(self, now: datetime) -> None:
        with self._lock:
            self._scopes = {None: _Scope()}
            self._holds.clear()

    # An in-process ledger never waits on anything but its lock: the async feed is the same.
    async def aadmit(
        self,
        now: datetime,
        scope: str | None,
        call_id: str | None,
        estimate: float | None,
        enforce: bool,
    ) -> Refusal | None:
        return self.admit(now, scope, call_id, estimate, enforce)

    async def asettle(
        self, now: datetime, scope: str | None, call_id: str | None, model: str, cost: float | None
    ) -> Crossings | None:
        return self.settle(now, scope, call_id, model, cost)

    async def arelease(self, call_id: str) -> None:
        self.release(call_id)

    def close(self) -> None:
        pass

    def _start_afresh_in_child(self) -> None:
        """After fork(): the child has spent nothing (DESIGN.md section 5). The lock is new, as
        another thread of the parent may have held the old one at the fork."""
        self._lock = threading.Lock()
        self._scopes = {None: _Scope()}
        self._holds = {}

    def _roll(self, now: datetime) -> None:
        """Start every scope afresh once a later window has begun; the caller holds the lock."""
        window = self._windows.current(now)
        if window is not self._window:
            self._window = window
            self._scopes = {None: _Scope()}

    def _give_back(self, call_id: str) -> None:
        held = self._holds.pop(call_id, None)
        if held is not None:
            ledger, estimate = held
            # Clamped: float sums and differences need not cancel exactly.
            ledger.reserved = max(ledger.reserved - estimate, 0.0)

    def _crossings(self, scope: str | None, ledger: _Scope) -> Crossings | None:
        fractions = self._marks.reached(ledger.spent, ledger.fired)
        ledger.fired.update(fractions)
        exceeded = not ledger.exceeded and self._marks.passed(ledger.spent)
        ledger.exceeded = ledger.exceeded or exceeded
        ledger.quiet_below = self._marks.quiet_below(ledger.fired, ledger.exceeded)
        if not fractions and not exceeded:
            return None
        return Crossings(scope, ledger.spent, fractions, exceeded)


_local_ledgers: weakref.WeakSet[LocalLedger] = weakref.WeakSet()


def _start_afresh_in_child() -> None:
    for ledger in list(_local_ledgers):
        ledger._start_afresh_in_child()


os.register_at_fork(after_in_child=_start_afresh_in_child)
