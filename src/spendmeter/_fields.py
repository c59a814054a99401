"""The one reader of fields on what LiteLLM returns: pydantic models, plain objects and dicts.

LiteLLM keeps many fields (a response's ``usage``, most fields of stream chunks, choices and
deltas) as pydantic "extra" fields, and its hidden params as a pydantic private attribute;
attribute access reaches both through pydantic's ``__getattr__``, which costs a microsecond,
two when the field is missing (it raises). These read the instance's dicts instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def field(source: Any, name: str) -> Any:
    """``getattr(source, name, None)``, or ``source.get(name)`` on a mapping."""
    if type(source) is dict:
        return source.get(name)
    if source is None:  # often: an absent field's field. A failed getattr raises inside.
        return None
    found = getattr(source, "__dict__", None)
    if found is not None and name in found:
        return found[name]
    extra = getattr(source, "__pydantic_extra__", None)
    if extra is not None:
        return extra.get(name)
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def fields(source: object) -> Mapping[str, Any] | None:
    """All the fields of a dict, a pydantic model or a plain object, as a mapping; ``None``
    for anything else."""
    if source is None:
        return None
    if isinstance(source, dict):
        return source
    found = getattr(source, "__dict__", None)
    if isinstance(found, dict):
        extra = getattr(source, "__pydantic_extra__", None)
        return {**found, **extra} if extra else found
    return source if isinstance(source, Mapping) else None


def privates(source: object) -> Mapping[str, Any] | None:
    """A pydantic model's private attributes (``_hidden_params``, ...); ``None`` for others."""
    found = getattr(source, "__pydantic_private__", None)
    return found if isinstance(found, dict) else None


def private(source: object, name: str) -> Any:
    """A pydantic private attribute (``_hidden_params``), or a plain attribute of that name."""
    found = getattr(source, "__pydantic_private__", None)  # privates(), inline: every call
    return found.get(name) if isinstance(found, dict) else getattr(source, name, None)
