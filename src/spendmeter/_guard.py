"""The one guard around telemetry steps: a fault inside spendmeter never reaches the caller.

A step that fails is logged at WARNING, with its traceback, the first time it fails in the
process, and at DEBUG after that: a step that fails on every call must say so once, not flood
the app's log with one traceback per LLM call. Only ``BudgetExceededError`` (a budget refusing
or stopping a call, which the user asked for) passes through; every other ``Exception`` is
swallowed.

``Guard(step)`` is the guard as a context manager (``with Guard("ending the span"):``) and as a
decorator (``@Guard("annotating the span")``: the function returns ``None`` when it fails), so
that a guarded step reads as one line where it is taken. On the path every plain call takes,
where each Python call shows in the instruction count, a step is guarded by ``try``/``except
Exception as error: STEP.failed(error)`` instead: the same rule, with no frame of its own.
A guard holds no state: one instance can be a module constant shared by every call and thread.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

from spendmeter.errors import BudgetExceededError

logger = logging.getLogger("spendmeter")

_P = ParamSpec("_P")
_T = TypeVar("_T")

# The steps that have failed in this process. Step names are constants in the code, so the
# set stays small; a race between two threads at most logs one failure twice at WARNING.
_failed: set[str] = set()


def report(step: str, error: BaseException) -> None:
    """Log ``error`` as a failure of ``step``: WARNING the first time, DEBUG after."""
    if step in _failed:
        logger.debug("spendmeter: %s failed again", step, exc_info=error)
        return
    _failed.add(step)
    logger.warning(
        "spendmeter: %s failed; the LLM call is unaffected (further failures of this step "
        "are logged at DEBUG)",
        step,
        exc_info=error,
    )


def _swallows(error: BaseException | None) -> bool:
    return isinstance(error, Exception) and not isinstance(error, BudgetExceededError)


class Guard:
    """Runs a telemetry step so that its faults are reported once and swallowed."""

    __slots__ = ("step",)

    def __init__(self, step: str) -> None:
        self.step = step

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if error is None or not _swallows(error):
            return False
        report(self.step, error)
        return True

    def failed(self, error: Exception) -> None:
        """The guard for a step written as ``try: ... except Exception as error:
        step.failed(error)``, where the call path is hot enough that a ``with`` costs: reports
        ``error``, or raises it again when it must reach the caller."""
        if not _swallows(error):
            raise error
        report(self.step, error)

    def __call__(self, func: Callable[_P, _T]) -> Callable[_P, _T | None]:
        step = self.step

        @functools.wraps(func)
        def guarded_step(*args: _P.args, **kwargs: _P.kwargs) -> _T | None:
            try:  # not `with self`: this runs on every call, and try costs nothing until it fails
                return func(*args, **kwargs)
            except Exception as error:
                if not _swallows(error):
                    raise
                report(step, error)
                return None

        return guarded_step
