"""Environment variables spendmeter reads, each parsed once, at instrument time.

- ``SPENDMETER_PRICING_FILE``: YAML or JSON price overrides (README, "Pricing file").
- ``SPENDMETER_METADATA_KEYS``: comma list of LiteLLM ``metadata`` keys copied to spans as
  ``spendmeter.metadata.<key>``.
- ``SPENDMETER_CONVERSATION_ID_KEY``: the LiteLLM ``metadata`` key whose value is the call's
  ``gen_ai.conversation.id`` (a chat session, thread or conversation id); unset by default.
- ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``: ``true`` records prompts and
  completions on spans; default ``false``.
- ``SPENDMETER_BUDGET_USD``: installs a ``BudgetSpanProcessor`` with this budget in USD.
- ``SPENDMETER_BUDGET_ACTION``: ``alert`` (default) or ``raise``.
- ``SPENDMETER_BUDGET_THRESHOLDS``: comma list of fractions of the budget (``0.5,0.8,1.0``).
- ``SPENDMETER_BUDGET_WINDOW``: ``none`` (default), ``hour``, ``day`` or ``month`` (UTC).
- ``SPENDMETER_BUDGET_SCOPE``: a span attribute whose values each get their own budget.
- ``SPENDMETER_BUDGET_LEDGER``: a ``redis://`` or ``rediss://`` URL; the budget is then shared
  by every process that names the same ledger (needs ``pip install 'spendmeter[redis]'``).
- ``SPENDMETER_BUDGET_LEDGER_ERROR``: ``open`` (default: calls go while the ledger cannot be
  reached) or ``closed`` (they are refused).
- ``SPENDMETER_BUDGET_LEDGER_TIMEOUT``: seconds each ledger operation may take (``0.5``).
- ``SPENDMETER_BUDGET_NAME``: the budget's ``name`` (``default``): its key in a shared ledger.

A bad value raises :class:`ConfigError` naming the variable and the value. So does a
``SPENDMETER_BUDGET_*`` companion set without ``SPENDMETER_BUDGET_USD``: it would do nothing,
and a budget the user believes is on must not be silently off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from spendmeter._numbers import number

PRICING_FILE = "SPENDMETER_PRICING_FILE"
METADATA_KEYS = "SPENDMETER_METADATA_KEYS"
CONVERSATION_ID_KEY = "SPENDMETER_CONVERSATION_ID_KEY"
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
BUDGET_USD = "SPENDMETER_BUDGET_USD"
BUDGET_ACTION = "SPENDMETER_BUDGET_ACTION"
BUDGET_THRESHOLDS = "SPENDMETER_BUDGET_THRESHOLDS"
BUDGET_WINDOW = "SPENDMETER_BUDGET_WINDOW"
BUDGET_SCOPE = "SPENDMETER_BUDGET_SCOPE"
BUDGET_LEDGER = "SPENDMETER_BUDGET_LEDGER"
BUDGET_LEDGER_ERROR = "SPENDMETER_BUDGET_LEDGER_ERROR"
BUDGET_LEDGER_TIMEOUT = "SPENDMETER_BUDGET_LEDGER_TIMEOUT"
BUDGET_NAME = "SPENDMETER_BUDGET_NAME"
# What configures the budget that SPENDMETER_BUDGET_USD installs: meaningless without it.
BUDGET_COMPANIONS = (
    BUDGET_ACTION,
    BUDGET_THRESHOLDS,
    BUDGET_WINDOW,
    BUDGET_SCOPE,
    BUDGET_NAME,
    BUDGET_LEDGER,
    BUDGET_LEDGER_ERROR,
    BUDGET_LEDGER_TIMEOUT,
)

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})
BUDGET_ACTIONS = ("alert", "raise")
BUDGET_WINDOWS = ("none", "hour", "day", "month")
LEDGER_ERROR_POLICIES = ("open", "closed")
DEFAULT_LEDGER_TIMEOUT = 0.5
DEFAULT_BUDGET_NAME = "default"


class ConfigError(ValueError):
    """An environment variable holds a value spendmeter cannot use; ``name`` is the variable."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class PricingConfigError(ValueError):
    """Price overrides that cannot be used; the message names the file, model and key.

    Defined here, with the other configuration error, so that catching both needs no LiteLLM
    import; ``spendmeter.pricing`` exports it.
    """


def _invalid(name: str, value: str, expected: str) -> ConfigError:
    return ConfigError(name, f"{name}={value!r} is not valid: expected {expected}")


@dataclass(frozen=True)
class BudgetSettings:
    budget: float
    raise_on_budget: bool
    thresholds: tuple[float, ...] | None
    window: str | None
    scope: str | None
    ledger: str | None = None
    on_ledger_error: str = "open"
    ledger_timeout: float = DEFAULT_LEDGER_TIMEOUT
    name: str = DEFAULT_BUDGET_NAME


@dataclass(frozen=True)
class Settings:
    pricing_file: str | None
    metadata_keys: tuple[str, ...]
    capture_content: bool
    budget: BudgetSettings | None
    conversation_id_key: str | None = None


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _invalid(name, raw, "true or false")


def _float(name: str, raw: str, expected: str) -> float:
    value = number(raw, text=True)
    if value is None:
        raise _invalid(name, raw, expected)
    return float(value)


def _usd(name: str, raw: str) -> float:
    expected = "a finite number of USD >= 0"
    value = _float(name, raw, expected)
    if value < 0:
        raise _invalid(name, raw, expected)
    return value


def _fractions(name: str, raw: str) -> tuple[float, ...]:
    expected = "a comma list of fractions of the budget in (0, 1]"
    values = tuple(_float(name, part, expected) for part in _names(raw))
    if not values or not all(0 < value <= 1 for value in values):
        raise _invalid(name, raw, expected)
    return values


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name, default)
    value = raw.strip().lower() or default
    if value not in choices:
        raise _invalid(name, raw, " or ".join(choices))
    return value


def _seconds(name: str, raw: str) -> float:
    expected = "a number of seconds > 0"
    value = _float(name, raw, expected)
    if value <= 0:
        raise _invalid(name, raw, expected)
    return value


def _ledger_url(env: Mapping[str, str]) -> str | None:
    raw = env.get(BUDGET_LEDGER, "").strip()
    if not raw:
        return None
    from spendmeter._redis_ledger import checked_url, redacted

    try:
        return checked_url(raw)
    except ValueError:
        # The URL may hold a password: the error shows it redacted.
        raise _invalid(BUDGET_LEDGER, redacted(raw), "a redis:// or rediss:// URL") from None


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _budget(env: Mapping[str, str]) -> BudgetSettings | None:
    # Every companion is checked, as BudgetSpanProcessor would check it, whether or not a
    # budget is set: the error names the variable and comes before LiteLLM is patched.
    thresholds = env.get(BUDGET_THRESHOLDS, "").strip()
    window = _choice(env, BUDGET_WINDOW, BUDGET_WINDOWS, "none")
    timeout = env.get(BUDGET_LEDGER_TIMEOUT, "").strip()
    raw = env.get(BUDGET_USD, "").strip()
    settings = BudgetSettings(
        budget=_usd(BUDGET_USD, raw) if raw else 0.0,
        raise_on_budget=_choice(env, BUDGET_ACTION, BUDGET_ACTIONS, "alert") == "raise",
        thresholds=_fractions(BUDGET_THRESHOLDS, thresholds) if thresholds else None,
        window=None if window == "none" else window,
        scope=env.get(BUDGET_SCOPE, "").strip() or None,
        ledger=_ledger_url(env),
        on_ledger_error=_choice(env, BUDGET_LEDGER_ERROR, LEDGER_ERROR_POLICIES, "open"),
        ledger_timeout=_seconds(BUDGET_LEDGER_TIMEOUT, timeout)
        if timeout
        else DEFAULT_LEDGER_TIMEOUT,
        name=env.get(BUDGET_NAME, "").strip() or DEFAULT_BUDGET_NAME,
    )
    if raw:
        return settings
    _no_companions(env)
    return None


def _no_companions(env: Mapping[str, str]) -> None:
    for name in BUDGET_COMPANIONS:
        if env.get(name, "").strip():
            raise ConfigError(
                name,
                f"{name} is set but {BUDGET_USD} is not: {name} configures the budget that "
                f"{BUDGET_USD} installs; set {BUDGET_USD}, or unset {name}",
            )


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Read every spendmeter variable; raise :class:`ConfigError` on the first bad one."""
    env = os.environ if env is None else env
    return Settings(
        pricing_file=env.get(PRICING_FILE, "").strip() or None,
        metadata_keys=_names(env.get(METADATA_KEYS, "")),
        capture_content=_flag(env, CAPTURE_CONTENT),
        budget=_budget(env),
        conversation_id_key=env.get(CONVERSATION_ID_KEY, "").strip() or None,
    )
