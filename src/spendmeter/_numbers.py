"""The one reader of numbers that come from outside spendmeter: a provider's token counts,
LiteLLM's prices and cost figures, a pricing file, request parameters, budget arguments and
environment values. Each reads through :func:`number`, so that a bool is never a number, an
infinity or NaN never a price, and a numeric string (a header, a YAML value) reads as its
number wherever text is expected.
"""

from __future__ import annotations

import math
import numbers


def number(value: object, *, text: bool = False) -> int | float | None:
    """``value`` as a finite int or float; ``None`` for anything else, bools included.
    ``text=True`` reads numeric strings too ("3e-7", "120")."""
    kind = type(value)
    if kind is int:  # the common cases first: they run on every token count of every call
        return value  # type: ignore[return-value]
    if value is None:
        return None
    if kind is float:
        return value if math.isfinite(value) else None  # type: ignore[arg-type, return-value]
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _parsed(value) if text else None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        found = float(value)
        return found if math.isfinite(found) else None
    return None


def count(value: object) -> int | None:
    """A count (of tokens, images, ...) from whatever a provider sent, never below 0."""
    if type(value) is int:
        return value if value >= 0 else 0
    found = number(value, text=True)
    if found is None:
        return None
    return found if type(found) is int and found >= 0 else max(int(found), 0)


def amount(value: object) -> float | None:
    """A cost or a rate: a finite number >= 0, numeric strings included."""
    if type(value) is float:  # the common case: LiteLLM's figures and splits are floats
        return value if 0.0 <= value < math.inf else None
    if value is None:  # the next most common: a figure that is not there
        return None
    found = number(value, text=True)
    return None if found is None or found < 0 else float(found)


def _parsed(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        found = float(text)
    except ValueError:
        return None
    return found if math.isfinite(found) else None
