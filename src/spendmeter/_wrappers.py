"""The wrapt wrappers that stand in for LiteLLM's functions, one for sync and one for async.

Both run the same steps: start the call (or step aside), let it run with its span current,
then hand back LiteLLM's result untouched, a stream behind a proxy.
"""

from __future__ import annotations

import logging
from typing import Any

from spendmeter._attributes import Operation
from spendmeter._call import Call, Telemetry, should_trace
from spendmeter._streams import TracedStream

logger = logging.getLogger("spendmeter")


def _start(telemetry: Telemetry, operation: Operation, args: tuple, kwargs: dict) -> Call | None:
    """The call's span, admitted by every budget; ``None`` to step aside."""
    if not should_trace():
        return None
    try:
        call = telemetry.begin(operation, args, kwargs)
    except Exception:
        logger.exception("spendmeter: starting a span failed; the LLM call is unaffected")
        return None
    call.admit()  # a budget's refusal raises here, before any request leaves the process
    return call


def _finish(call: Call, result: Any) -> Any:
    """Hand back LiteLLM's result: a stream behind a proxy, anything else untouched.

    Runs while the call's span is still current, so that budgets hear of the call there.
    """
    try:
        if call.params.get("stream") is True and (
            hasattr(result, "__next__") or hasattr(result, "__anext__")
        ):
            return TracedStream(result, call)
        call.succeed(result)  # may raise BudgetExceededError carrying `result`
        return result
    finally:
        call.deactivate()  # a finished call did it already; a stream's span stays open


def sync_wrapper(telemetry: Telemetry, operation: Operation) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        call = _start(telemetry, operation, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        with call:
            result = wrapped(*args, **kwargs)
        return _finish(call, result)

    return wrapper


def async_wrapper(telemetry: Telemetry, operation: Operation) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        call = _start(telemetry, operation, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        with call:
            result = await wrapped(*args, **kwargs)
        return _finish(call, result)

    return wrapper
