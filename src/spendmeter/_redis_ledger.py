"""The ledger on Redis: one budget shared by every process, on every host, that names it.

Each scope value's ledger of a window is a hash under a dated key,
``spendmeter:{<name>}:<window>:s<scope>``, with its models and its holds beside it; the keys
expire a day past their window's end, so no job ever resets a window. Every key of one budget
shares the hash tag ``{<name>}``, so that the scripts below also run on Redis Cluster.

Admission, reservation and settlement are Lua scripts, atomic on the server: concurrent
processes can never all slip under the cap together. The scripts compare spend against the
numbers of ``spendmeter._ledger.Marks``, so the tolerance rules exist once, in Python. A call is
settled once by its id (a per-day hash of settled ids), however often its settlement is sent,
and the settler whose call crosses a threshold is the one told so: alerts fire once per fleet.

When Redis cannot be reached (down, stalled past the timeout, or a script fails), the ledger
rests for ``RETRY_AFTER`` seconds, so that a dead server costs one timeout, not one per call.
Meanwhile settlements are owed: kept by id and sent again once Redis answers. A ledger that Redis
lost (restarted empty) shows a new epoch, and each process hands back what it had counted there.

One generator per operation yields the commands it needs and reads their replies; a sync and an
async driver run the same generators, so no ledger logic is written twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from spendmeter._ledger import (
    Crossings,
    Marks,
    Refusal,
    ScopeTotals,
    Snapshot,
    Window,
    Windows,
)

logger = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss")
INSTALL_HINT = "pip install 'spendmeter[redis]'"
RETRY_AFTER = 1.0  # seconds a ledger that failed is left alone before it is tried again
KEEP_PAST_END = 86_400  # seconds a window's keys (and a day's settled ids) outlive it
HOLD_TTL = 3_600  # seconds after which a hold whose call never ended is given back

_T = TypeVar("_T")


# --- URLs -----------------------------------------------------------------------------------

_PASSWORD = re.compile(r"(?<=://)([^/@:]*):[^/@]*@")


def redacted(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    return _PASSWORD.sub(r"\1:***@", url)


def checked_url(url: str) -> str:
    """``url`` if it names a Redis server; else ``ValueError`` saying why (password redacted)."""
    shown = redacted(url)
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - parsing the port is what checks it
    except ValueError as error:
        raise ValueError(f"malformed ledger URL {shown!r}: {error}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"ledger URL {shown!r} has an unknown scheme {parts.scheme!r}: "
            "use redis://host:port/db or rediss://host:port/db"
        )
    if not parts.hostname:
        raise ValueError(f"malformed ledger URL {shown!r}: no host")
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ValueError(f"malformed ledger URL {shown!r}: the database must be a number")
    return url.strip()


# --- the Lua scripts ------------------------------------------------------------------------

_PRELUDE = """
local function num(value) return tonumber(value) or 0 end
local function fmt(value) return string.format('%.17g', value) end
-- The epoch names this incarnation of a ledger: a process tells from it a ledger that Redis
-- lost (restarted empty) from the one it counted into.
local function open_ledger(ledger, token)
  redis.call('HSETNX', ledger, 'epoch', token)
  local seen = redis.call('HMGET', ledger, 'epoch', 'cleared')
  return seen[1], seen[2] or '0'
end
local function keep(ttl, keys)
  ttl = tonumber(ttl)
  if ttl > 0 then
    for _, key in ipairs(keys) do redis.call('EXPIRE', key, ttl) end
  end
end
local function release(ledger, holds, id)
  local held = redis.call('HGET', ledger, 'h:' .. id)
  if not held then return end
  redis.call('HDEL', ledger, 'h:' .. id)
  redis.call('ZREM', holds, id)
  -- With no hold left, nothing is reserved: float sums and differences need not cancel.
  local reserved = 0
  if redis.call('HINCRBY', ledger, 'holding', -1) > 0 then
    reserved = math.max(num(redis.call('HGET', ledger, 'reserved')) - tonumber(held), 0)
  end
  redis.call('HSET', ledger, 'reserved', fmt(reserved))
end
"""

# KEYS: ledger, holds, scopes. ARGV: token, ttl, scope id, now, enforce, ceiling,
# estimate ('' holds nothing), call id, hold deadline.
_ADMIT = """
local ledger, holds = KEYS[1], KEYS[2]
local epoch, cleared = open_ledger(ledger, ARGV[1])
-- Holds of calls that never ended (their process died) are given back.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', holds, '-inf', ARGV[4], 'LIMIT', 0, 64)) do
  release(ledger, holds, id)
end
redis.call('SADD', KEYS[3], ARGV[3])
keep(ARGV[2], {ledger, KEYS[3]})
local state = redis.call('HMGET', ledger, 'spent', 'reserved', 'exceeded')
local spent, reserved = num(state[1]), num(state[2])
if ARGV[5] == '1' and state[3] == '1' then
  return {epoch, cleared, 'exceeded', fmt(spent)}
end
if ARGV[7] == '' then return {epoch, cleared, 'ok'} end
local estimate = tonumber(ARGV[7])
if spent + reserved + estimate > tonumber(ARGV[6]) then
  return {epoch, cleared, 'no_room', fmt(spent), fmt(reserved)}
end
if redis.call('HSETNX', ledger, 'h:' .. ARGV[8], ARGV[7]) == 1 then
  redis.call('HSET', ledger, 'reserved', fmt(reserved + estimate))
  redis.call('HINCRBY', ledger, 'holding', 1)
  redis.call('ZADD', holds, ARGV[9], ARGV[8])
  keep(ARGV[2], {holds})
end
return {epoch, cleared, 'ok'}
"""

# KEYS: ledger, models, holds, scopes, settled. ARGV: token, ttl, scope id, settle id,
# settled ttl, requests, ceiling, priced model count, (model, cost) pairs, (fraction, mark) pairs.
_SETTLE = """
local ledger, models = KEYS[1], KEYS[2]
local epoch, cleared = open_ledger(ledger, ARGV[1])
if redis.call('HSETNX', KEYS[5], ARGV[4], '1') == 0 then return {epoch, cleared, 'dup'} end
redis.call('EXPIRE', KEYS[5], ARGV[5])
release(ledger, KEYS[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('HINCRBY', ledger, 'requests', ARGV[6])
local priced = tonumber(ARGV[8])
local spent = num(redis.call('HGET', ledger, 'spent'))
local at = 9
for _ = 1, priced do
  local cost = tonumber(ARGV[at + 1])
  spent = spent + cost
  redis.call('HSET', models, ARGV[at], fmt(num(redis.call('HGET', models, ARGV[at])) + cost))
  at = at + 2
end
keep(ARGV[2], {ledger, models, KEYS[4]})
if priced == 0 then return {epoch, cleared, 'ok', fmt(spent), '0'} end
redis.call('HSET', ledger, 'spent', fmt(spent))
local exceeded = '0'
if spent > tonumber(ARGV[7]) and redis.call('HSETNX', ledger, 'exceeded', '1') == 1 then
  exceeded = '1'
end
local reply = {epoch, cleared, 'ok', fmt(spent), exceeded}
if spent > 0 then
  for i = at, #ARGV, 2 do
    local fraction, mark = ARGV[i], tonumber(ARGV[i + 1])
    if spent >= mark and redis.call('HSETNX', ledger, 'f:' .. fraction, '1') == 1 then
      reply[#reply + 1] = fraction
    end
  end
end
return reply
"""

# KEYS: ledger, holds. ARGV: call id.
_RELEASE = """
release(KEYS[1], KEYS[2], ARGV[1])
return 1
"""

# KEYS: (ledger, models) per scope value.
_READ = """
local reply = {}
for i = 1, #KEYS, 2 do
  local row = redis.call('HMGET', KEYS[i], 'spent', 'requests', 'reserved', 'exceeded')
  reply[#reply + 1] = {
    row[1] or '0', row[2] or '0', row[3] or '0', row[4] or '0', redis.call('HGETALL', KEYS[i + 1])
  }
end
return reply
"""

# KEYS: scopes, then (ledger, models, holds) per scope value. ARGV: new epoch, ttl.
# A cleared ledger keeps an epoch marked 'cleared', so that no process hands back what it had
# counted there before the reset.
_RESET = """
redis.call('DEL', KEYS[1])
for i = 2, #KEYS, 3 do
  redis.call('DEL', KEYS[i], KEYS[i + 1], KEYS[i + 2])
  redis.call('HSET', KEYS[i], 'epoch', ARGV[1], 'cleared', '1')
  keep(ARGV[2], {KEYS[i]})
end
return 1
"""


@dataclass(frozen=True)
class _Script:
    source: str
    sha: str

    @classmethod
    def of(cls, body: str) -> _Script:
        source = _PRELUDE + body
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


ADMIT, SETTLE, RELEASE, READ, RESET = map(_Script.of, (_ADMIT, _SETTLE, _RELEASE, _READ, _RESET))


@dataclass(frozen=True)
class _Command:
    """One Redis command; a script is sent by its SHA (EVALSHA) and loaded if Redis lacks it."""

    args: tuple[Any, ...]
    script: _Script | None = None

    @classmethod
    def run(cls, script: _Script, keys: Iterable[str], argv: Iterable[Any]) -> _Command:
        keys = tuple(keys)
        return cls(("EVALSHA", script.sha, len(keys), *keys, *argv), script)

    def as_eval(self) -> tuple[Any, ...]:
        assert self.script is not None
        return ("EVAL", self.script.source, *self.args[2:])


Steps = Generator[_Command, Any, _T]


# --- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ScopeKeys:
    """The keys of one scope value's ledger in one window."""

    ledger: str
    models: str
    holds: str
    scopes: str
    scope_id: str


def _scope_id(scope: str | None) -> str:
    # Prefixed so that no scope value can collide with the unscoped ledger.
    return "-" if scope is None else "=" + scope


def _scope_of(scope_id: str) -> str | None:
    return None if scope_id == "-" else scope_id[1:]


class _Keys:
    def __init__(self, name: str) -> None:
        self._prefix = f"spendmeter:{{{name}}}"

    def scope(self, label: str, scope: str | None) -> _ScopeKeys:
        window, scope_id = f"{self._prefix}:{label}", _scope_id(scope)
        return _ScopeKeys(
            ledger=f"{window}:s{scope_id}",
            models=f"{window}:m{scope_id}",
            holds=f"{window}:h{scope_id}",
            scopes=f"{window}:scopes",
            scope_id=scope_id,
        )

    def settled(self, now: datetime) -> str:
        return f"{self._prefix}:settled:{now:%Y%m%d}"


# --- connections ----------------------------------------------------------------------------


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
    except ImportError:
        raise ImportError(f"a Redis budget ledger needs redis-py: {INSTALL_HINT}") from None
    return redis


class _Connection:
    """The clients a shared ledger talks through: one sync client, and an async client per
    event loop (a redis.asyncio connection belongs to the loop that opened it)."""

    def __init__(self, target: Any, timeout: float) -> None:
        if isinstance(target, str):
            url = checked_url(target)
            redis = _import_redis()
            self.label = redacted(url)
            self._secret = urlsplit(url).password
            # No retries: a failed operation is owed and sent again later, not waited on.
            options = {
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "decode_responses": True,
            }
            self.sync = _waiting(
                redis, redis.Redis.from_url(url, retry=_no_retry(redis), **options), timeout
            )
            self._make_async: Callable[[], Any] | None = lambda: _waiting(
                redis.asyncio,
                redis.asyncio.Redis.from_url(url, retry=_no_retry(redis.asyncio), **options),
                timeout,
            )
        else:
            redis = _import_redis()
            if not isinstance(target, redis.Redis):
                raise TypeError(
                    "ledger must be None, a redis:// or rediss:// URL or a redis.Redis client, "
                    f"got {type(target).__name__}"
                )
            kwargs = target.connection_pool.connection_kwargs
            self.sync = target
            self.label = _label_of(kwargs)
            self._secret = kwargs.get("password")
            self._make_async = _async_twin(redis, target, timeout)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def async_client(self) -> Any | None:
        """The running loop's async client; ``None`` when none can be derived (then async
        operations run the sync client on a worker thread, never on the loop)."""
        if self._make_async is None:
            return None
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = self._make_async()
        return client

    def forget_async_clients(self) -> None:
        self._async = weakref.WeakKeyDictionary()

    def scrub(self, text: str) -> str:
        """``text`` without the password (error messages may echo what they were given)."""
        return text.replace(self._secret, "***") if self._secret else text


def _no_retry(module: Any) -> Any:
    from redis.backoff import NoBackoff

    return module.retry.Retry(NoBackoff(), 0)


def _label_of(kwargs: dict[str, Any]) -> str:
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    scheme = "rediss" if any(key.startswith("ssl_") for key in kwargs) else "redis"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"{scheme}://{host}:{port}/{kwargs.get('db', 0)}"


def _waiting(module: Any, client: Any, timeout: float) -> Any:
    """``client``, its pool made one that waits up to ``timeout`` for a free connection. redis-py's
    own pool raises once its connections (100) are all in use, as they are under a burst of
    concurrent calls: the ledger would take a healthy Redis for one that is down, and a budget
    that fails open would let the burst past its cap. ``module``: redis or redis.asyncio."""
    pool = client.connection_pool
    waiting = module.BlockingConnectionPool(
        connection_class=pool.connection_class,
        max_connections=pool.max_connections,
        timeout=timeout,
        **pool.connection_kwargs,
    )
    return module.Redis.from_pool(waiting)


def _async_twin(redis: Any, client: Any, timeout: float) -> Callable[[], Any] | None:
    """Makes redis.asyncio clients that connect as ``client`` does, or ``None`` when its pool
    is not a plain one (Sentinel and the like manage connections of their own)."""
    pool = client.connection_pool
    if type(pool) is not redis.ConnectionPool:
        return None
    accepted = inspect.signature(redis.asyncio.Redis.__init__).parameters
    kwargs = {
        key: value
        for key, value in pool.connection_kwargs.items()
        if key in accepted and key not in ("retry", "connection_pool", "credential_provider")
    }
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        kwargs["unix_socket_path"] = pool.connection_kwargs["path"]
    elif issubclass(pool.connection_class, redis.SSLConnection):
        kwargs["ssl"] = True
    return lambda: _waiting(
        redis.asyncio, redis.asyncio.Redis(retry=_no_retry(redis.asyncio), **kwargs), timeout
    )


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_text(item) for item in value]
    return value


# --- what the ledger owes Redis --------------------------------------------------------------


@dataclass(frozen=True)
class _Owed:
    """A settlement (or a release) Redis has not acknowledged yet. It is sent again until it
    is; the script counts each id once, so a settlement sent twice counts once."""

    id: str
    command: _Command
    keys: _ScopeKeys
    scope: str | None
    now: datetime  # when the call finished: a hand-back it brings about is dated alike
    window: Window
    requests: int = 0
    models: tuple[tuple[str, float], ...] = ()
    settles: bool = True  # False: a release, which counts nothing
    credit: bool = True  # False: a hand-back of what this process had already counted


@dataclass
class _Share:
    """What this process has counted into one ledger: what it hands back if Redis loses it."""

    requests: int = 0
    models: dict[str, float] = field(default_factory=dict)

    def add(self, owed: _Owed) -> None:
        self.requests += owed.requests
        for model, cost in owed.models:
            self.models[model] = self.models.get(model, 0.0) + cost


class RedisLedger:
    """A ``spendmeter._ledger.Ledger`` on Redis, shared by all who name it and ``name``."""

    def __init__(
        self,
        target: Any,
        *,
        name: str,
        marks: Marks,
        window: str | None,
        policy: str,
        timeout: float,
        announce: Callable[[Crossings], None],
    ) -> None:
        self._connection = _Connection(target, timeout)
        self._name = name
        self._marks = marks
        self._alerts = tuple(arg for f, mark in marks.alerts for arg in (repr(f), repr(mark)))
        self._policy = policy
        self._announce = announce
        self._keys = _Keys(name)
        self._windows = Windows(window)
        redis = _import_redis()
        self._errors = (redis.RedisError, OSError)
        self._no_script = redis.exceptions.NoScriptError
        self._lock = threading.Lock()
        self._fresh_process()

    def _fresh_process(self) -> None:
        """Local state, made anew in a forked child: the parent's debts are the parent's."""
        self._pid = os.getpid()
        self._token = uuid.uuid4().hex
        self._ids = itertools.count(1)
        self._label = ""
        self._owed: dict[str, _Owed] = {}
        self._holds: dict[str, tuple[_ScopeKeys, datetime, Window]] = {}
        self._shares: dict[str, _Share] = {}
        self._epochs: dict[str, str] = {}
        self._exceeded: set[str] = set()
        self._last: tuple[str, Snapshot] = ("", {})
        self._down = False
        self._rest_until = 0.0
        self._flushing = False
        self._connection.forget_async_clients()

    def _epoch(self) -> str:
        """A name no ledger has had: the epoch of a ledger this command may have to create."""
        return f"{self._token}-{next(self._ids)}"

    def __str__(self) -> str:
        return self._connection.label

    @property
    def refuses_when_unreachable(self) -> bool:
        return self._policy == "closed"

    settles_by_id = True

    # --- the Ledger operations: each builds its steps once and runs them sync or async --------

    def admit(
        self,
        now: datetime,
        scope: str | None,
        call_id: str | None,
        estimate: float | None,
        enforce: bool,
    ) -> Refusal | None:
        return self._drive(*self._admission(now, scope, call_id, estimate, enforce))

    async def aadmit(
        self,
        now: datetime,
        scope: str | None,
        call_id: str | None,
        estimate: float | None,
        enforce: bool,
    ) -> Refusal | None:
        return await self._adrive(*self._admission(now, scope, call_id, estimate, enforce))

    def settle(
        self, now: datetime, scope: str | None, call_id: str | None, model: str, cost: float | None
    ) -> Crossings | None:
        return self._drive(*self._settlement(now, scope, call_id, model, cost))

    async def asettle(
        self, now: datetime, scope: str | None, call_id: str | None, model: str, cost: float | None
    ) -> Crossings | None:
        return await self._adrive(*self._settlement(now, scope, call_id, model, cost))

    def release(self, call_id: str) -> None:
        self._drive(*self._release(call_id))

    async def arelease(self, call_id: str) -> None:
        await self._adrive(*self._release(call_id))

    def snapshot(self, now: datetime) -> Snapshot:
        return self._drive(*self._reading(now))

    def reset(self, now: datetime) -> None:
        self._drive(*self._resetting(now))

    def close(self) -> None:
        """Hand Redis what is still owed, if it answers now."""
        if self._owed and self._may_try():
            self._drive(self._paying(), lambda: None)

    # --- admission ------------------------------------------------------------------------

    def _admission(
        self,
        now: datetime,
        scope: str | None,
        call_id: str | None,
        estimate: float | None,
        enforce: bool,
    ) -> tuple[Steps[Refusal | None], Callable[[], Refusal | None]]:
        window = self._window(now)
        keys = self._keys.scope(window.label, scope)
        holds = call_id is not None and estimate is not None
        command = _Command.run(
            ADMIT,
            (keys.ledger, keys.holds, keys.scopes),
            (
                self._epoch(),
                _ttl(window, now),
                keys.scope_id,
                now.timestamp(),
                int(enforce),
                repr(self._marks.ceiling),
                repr(estimate) if holds else "",
                call_id or "",
                now.timestamp() + HOLD_TTL,
            ),
        )

        def steps() -> Steps[Refusal | None]:
            epoch, cleared, status, *figures = _text((yield command))
            yield from self._seen(now, window, keys, scope, epoch, cleared)
            if status == "exceeded":
                self._note_exceeded(keys)
                return Refusal("exceeded", float(figures[0]))
            if status == "no_room":
                spent, reserved = float(figures[0]), float(figures[1])
                left = max(self._marks.budget - spent - reserved, 0.0)
                return Refusal("no_room", spent, left, estimate or 0.0)
            if holds and call_id is not None:
                with self._lock:
                    self._holds[call_id] = (keys, now, window)
            return None

        def unreachable() -> Refusal | None:
            if self._policy == "closed":
                return Refusal("unreachable", self._last_spent(window, scope))
            # Open: the call goes, unless this process already saw the budget passed.
            if enforce and keys.ledger in self._exceeded:
                return Refusal("exceeded", self._last_spent(window, scope))
            return None

        return steps(), unreachable

    # --- settlement -----------------------------------------------------------------------

    def _settlement(
        self, now: datetime, scope: str | None, call_id: str | None, model: str, cost: float | None
    ) -> tuple[Steps[Crossings | None], Callable[[], None]]:
        window = self._window(now)
        keys = self._keys.scope(window.label, scope)
        owed = self._owing(
            now,
            window,
            keys,
            scope,
            call_id or f"{self._token}-{next(self._ids)}",
            requests=1,
            models=() if cost is None else ((model, cost),),
        )

        def unreachable() -> None:
            with self._lock:
                self._owed[owed.id] = owed

        with self._lock:
            self._holds.pop(owed.id, None)
        return self._paid(owed), unreachable

    def _owing(
        self,
        now: datetime,
        window: Window,
        keys: _ScopeKeys,
        scope: str | None,
        settle_id: str,
        *,
        requests: int,
        models: tuple[tuple[str, float], ...],
        credit: bool = True,
    ) -> _Owed:
        command = _Command.run(
            SETTLE,
            (keys.ledger, keys.models, keys.holds, keys.scopes, self._keys.settled(now)),
            (
                self._epoch(),
                _ttl(window, now),
                keys.scope_id,
                settle_id,
                _settled_ttl(now),
                requests,
                repr(self._marks.ceiling),
                len(models),
                *(arg for model, cost in models for arg in (model, repr(cost))),
                *self._alerts,
            ),
        )
        return _Owed(settle_id, command, keys, scope, now, window, requests, models, True, credit)

    def _paid(self, owed: _Owed) -> Steps[Crossings | None]:
        """Send a settlement; what it crossed. Also hands back a ledger Redis lost."""
        epoch, cleared, status, *figures = _text((yield owed.command))
        with self._lock:
            self._owed.pop(owed.id, None)
        if status == "dup":
            return None
        hand_back = self._epoch_changed(
            owed.now, owed.window, owed.keys, owed.scope, epoch, cleared
        )
        self._credit(owed)
        if hand_back is not None:
            self._announce_all((yield from self._paid(hand_back)))
        spent, exceeded = float(figures[0]), figures[1] == "1"
        self._remember(owed, spent)
        fractions = tuple(float(fraction) for fraction in figures[2:])
        if not fractions and not exceeded:
            return None
        return Crossings(owed.scope, spent, fractions, exceeded)

    # --- release, reads, reset ------------------------------------------------------------

    def _release(self, call_id: str) -> tuple[Steps[None], Callable[[], None]]:
        with self._lock:
            held = self._holds.pop(call_id, None)
        if held is None:  # nothing was held back in Redis for it
            return _nothing(), lambda: None
        keys, now, window = held
        owed = _Owed(
            f"release:{call_id}",
            _Command.run(RELEASE, (keys.ledger, keys.holds), (call_id,)),
            keys,
            None,
            now,
            window,
            settles=False,
        )

        def steps() -> Steps[None]:
            yield owed.command

        def unreachable() -> None:
            with self._lock:
                self._owed[owed.id] = owed

        return steps(), unreachable

    def _reading(self, now: datetime) -> tuple[Steps[Snapshot], Callable[[], Snapshot]]:
        window = self._window(now)
        scopes_key = self._keys.scope(window.label, None).scopes

        def steps() -> Steps[Snapshot]:
            scope_ids = sorted(_text((yield _Command(("SMEMBERS", scopes_key)))))
            scopes = [_scope_of(scope_id) for scope_id in scope_ids]
            keys = [self._keys.scope(window.label, scope) for scope in scopes]
            rows = _text((yield _Command.run(READ, _flat((k.ledger, k.models) for k in keys), ())))
            snapshot: Snapshot = {None: ScopeTotals()}
            for scope, row in zip(scopes, rows, strict=True):
                snapshot[scope] = _totals(*row)
            with self._lock:
                self._last = (window.label, snapshot)
            return snapshot

        return steps(), lambda: self._known(window)

    def _resetting(self, now: datetime) -> tuple[Steps[None], Callable[[], None]]:
        window = self._window(now)
        scopes_key = self._keys.scope(window.label, None).scopes
        epoch = uuid.uuid4().hex

        def steps() -> Steps[None]:
            scope_ids = set(_text((yield _Command(("SMEMBERS", scopes_key))))) | {"-"}
            keys = [self._keys.scope(window.label, _scope_of(scope_id)) for scope_id in scope_ids]
            yield _Command.run(
                RESET,
                (scopes_key, *_flat((k.ledger, k.models, k.holds) for k in keys)),
                (epoch, _ttl(window, now)),
            )
            with self._lock:
                for k in keys:
                    self._epochs[k.ledger] = epoch
            forget()

        def forget() -> None:
            with self._lock:
                self._shares.clear()
                self._exceeded.clear()
                self._last = ("", {})
                self._owed = {
                    key: owed
                    for key, owed in self._owed.items()
                    if owed.window.label != window.label
                }

        return steps(), forget

    # --- the ledger's view of itself ------------------------------------------------------

    def _window(self, now: datetime) -> Window:
        """The current window; what this process keeps of an earlier one is let go."""
        with self._lock:
            if os.getpid() != self._pid:
                self._fresh_process()
            window = self._windows.current(now)
            if window.label != self._label:
                self._label = window.label
                self._shares.clear()
                self._epochs.clear()
                self._exceeded.clear()
            return window

    def _seen(
        self,
        now: datetime,
        window: Window,
        keys: _ScopeKeys,
        scope: str | None,
        epoch: str,
        cleared: str,
    ) -> Steps[None]:
        hand_back = self._epoch_changed(now, window, keys, scope, epoch, cleared)
        if hand_back is not None:
            self._announce_all((yield from self._paid(hand_back)))

    def _epoch_changed(
        self,
        now: datetime,
        window: Window,
        keys: _ScopeKeys,
        scope: str | None,
        epoch: str,
        cleared: str,
    ) -> _Owed | None:
        """Note the ledger's epoch. A new one means Redis lost the ledger this process counted
        into (or a reset cleared it): what it had counted there is handed back, once per epoch,
        unless a reset asked to forget it."""
        with self._lock:
            known = self._epochs.get(keys.ledger)
            self._epochs[keys.ledger] = epoch
            if known is None or known == epoch:
                return None
            share = self._shares.pop(keys.ledger, None)
            if cleared == "1" or share is None or share.requests == 0:
                return None
            self._shares[keys.ledger] = share  # still this process's part of the new ledger
        hand_back = self._owing(
            now,
            window,
            keys,
            scope,
            f"restore:{self._token}:{epoch}",
            requests=share.requests,
            models=tuple(share.models.items()),
            credit=False,
        )
        with self._lock:
            self._owed[hand_back.id] = hand_back  # owed until Redis acknowledges it
        logger.info(
            "spendmeter: the %r budget's ledger %s lost its spend (Redis restarted empty?); "
            "handing back the $%.6f this process had counted there",
            self._name,
            self,
            sum(share.models.values()),
        )
        return hand_back

    def _credit(self, owed: _Owed) -> None:
        if owed.credit and owed.settles:
            with self._lock:
                if owed.window.label == self._label:
                    self._shares.setdefault(owed.keys.ledger, _Share()).add(owed)

    def _remember(self, owed: _Owed, spent: float) -> None:
        """Keep the last figures up to date from a settlement's reply, at no cost: the fleet's
        spend as Redis sums it, and this process's calls on top of the requests last read."""
        passed = self._marks.passed(spent)
        with self._lock:
            if passed:
                self._exceeded.add(owed.keys.ledger)
            label, last = self._last
            if label != owed.window.label:
                label, last = owed.window.label, {}
            totals = _plus(last.get(owed.scope, ScopeTotals()), owed)
            last = {**last, owed.scope: replace(totals, spent=spent, exceeded=passed)}
            self._last = (label, last)

    def _note_exceeded(self, keys: _ScopeKeys) -> None:
        with self._lock:
            self._exceeded.add(keys.ledger)

    def _announce_all(self, crossings: Crossings | None) -> None:
        if crossings is not None:
            self._announce(crossings)

    def _known(self, window: Window) -> Snapshot:
        """The fleet's totals as last read, plus what this process owes since: the best
        figures there are while Redis cannot be reached."""
        with self._lock:
            label, last = self._last
            owed = [o for o in self._owed.values() if o.settles and o.window.label == window.label]
        snapshot: Snapshot = dict(last) if label == window.label else {}
        snapshot.setdefault(None, ScopeTotals())
        for item in owed:
            snapshot[item.scope] = _plus(snapshot.get(item.scope, ScopeTotals()), item)
        return snapshot

    def _last_spent(self, window: Window, scope: str | None) -> float:
        totals = self._known(window).get(scope)
        return totals.spent if totals else 0.0

    # --- paying what is owed once Redis answers again -------------------------------------

    def _paying(self) -> Steps[None]:
        with self._lock:
            owed = list(self._owed.values())
        for item in owed:
            if item.settles:
                self._announce_all((yield from self._paid(item)))
            else:
                yield item.command
                with self._lock:
                    self._owed.pop(item.id, None)

    def _payment_due(self) -> bool:
        with self._lock:
            if not self._owed or self._flushing:
                return False
            self._flushing = True
            return True

    # --- health ---------------------------------------------------------------------------

    def _may_try(self) -> bool:
        return time.monotonic() >= self._rest_until

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self._rest_until = time.monotonic() + RETRY_AFTER
            first, self._down = not self._down, True
        what = self._connection.scrub(f"{type(error).__name__}: {error}")
        if not first:
            logger.debug("spendmeter: the %r budget's ledger %s: %s", self._name, self, what)
            return
        logger.warning(
            "spendmeter: the %r budget's ledger %s cannot be used (%s); until it can, %s",
            self._name,
            self,
            what,
            "calls go ahead and their spend is handed to it once it is back"
            if self._policy == "open"
            else "calls are refused (on_ledger_error='closed')",
        )

    def _answered(self) -> None:
        if not self._down:
            return
        with self._lock:
            was_down, self._down = self._down, False
            owed = sum(1 for item in self._owed.values() if item.settles)
        if was_down:
            logger.info(
                "spendmeter: the %r budget's ledger %s is back; handing it %d calls counted "
                "meanwhile",
                self._name,
                self,
                owed,
            )

    # --- the drivers: the same steps, sync or async ----------------------------------------

    def _drive(self, steps: Steps[_T], unreachable: Callable[[], _T]) -> _T:
        if not self._may_try():
            steps.close()
            return unreachable()
        client = self._connection.sync
        try:
            reply: Any = None
            while True:
                try:
                    command = steps.send(reply)
                except StopIteration as done:
                    result: _T = done.value
                    break
                reply = self._execute(client, command)
        except self._errors as error:
            steps.close()
            self._failed(error)
            return unreachable()
        self._answered()
        if self._payment_due():
            try:
                self._drive(self._paying(), lambda: None)
            finally:
                self._flushing = False
        return result

    async def _adrive(self, steps: Steps[_T], unreachable: Callable[[], _T]) -> _T:
        client = self._connection.async_client()
        if client is None:
            return await asyncio.to_thread(self._drive, steps, unreachable)
        if not self._may_try():
            steps.close()
            return unreachable()
        try:
            reply: Any = None
            while True:
                try:
                    command = steps.send(reply)
                except StopIteration as done:
                    result: _T = done.value
                    break
                reply = await self._aexecute(client, command)
        except self._errors as error:
            steps.close()
            self._failed(error)
            return unreachable()
        self._answered()
        if self._payment_due():
            try:
                await self._adrive(self._paying(), lambda: None)
            finally:
                self._flushing = False
        return result

    def _execute(self, client: Any, command: _Command) -> Any:
        try:
            return client.execute_command(*command.args)
        except self._no_script:
            return client.execute_command(*command.as_eval())

    async def _aexecute(self, client: Any, command: _Command) -> Any:
        try:
            return await client.execute_command(*command.args)
        except self._no_script:
            return await client.execute_command(*command.as_eval())


def _ttl(window: Window, now: datetime) -> int:
    """Seconds the keys of ``window`` live from ``now``: 0 (for ever) when unbounded."""
    return int(window.seconds_left(now)) + KEEP_PAST_END if window.bounded else 0


def _settled_ttl(now: datetime) -> int:
    """Settled ids are kept per day, for a day past it: a settlement sent again within that
    time still counts once."""
    day_end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return int((day_end - now).total_seconds()) + KEEP_PAST_END


def _nothing() -> Steps[None]:
    return
    yield  # a generator that sends no command


def _totals(
    spent: str, requests: str, reserved: str, exceeded: str, models: list[str]
) -> ScopeTotals:
    by_model = dict(zip(models[::2], map(float, models[1::2]), strict=True))
    return ScopeTotals(float(spent), int(requests), float(reserved), exceeded == "1", by_model)


def _plus(totals: ScopeTotals, owed: _Owed) -> ScopeTotals:
    """``totals`` with one settlement added."""
    by_model = dict(totals.cost_by_model)
    for model, cost in owed.models:
        by_model[model] = by_model.get(model, 0.0) + cost
    return replace(
        totals,
        spent=totals.spent + sum(cost for _, cost in owed.models),
        requests=totals.requests + owed.requests,
        cost_by_model=by_model,
    )


def _flat(groups: Iterable[Iterable[str]]) -> list[str]:
    return [key for group in groups for key in group]
