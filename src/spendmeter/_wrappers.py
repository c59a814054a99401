"""The wrapt wrappers that stand in for LiteLLM's functions, one for sync and one for async.

Both run the same steps: start the call (or step aside), ask its budgets, let it run with its
span current, then hand back LiteLLM's result untouched, a stream behind a proxy. They differ
only where the language forces it: an async call awaits its budgets, so that a ledger on the
network never blocks the event loop.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from spendmeter._attributes import Operation
from spendmeter._call import _IN_CALL, Call, Telemetry
from spendmeter._streams import TracedStream

logger = logging.getLogger("spendmeter")


def _start(telemetry: Telemetry, operation: Operation, args: tuple, kwargs: dict) -> Call | None:
    """The call, or ``None`` to step aside (LiteLLM calling itself, or a fault of ours)."""
    if _IN_CALL.get():
        return None
    try:
        # Under suppress_instrumentation() the call makes no span, but its budgets still
        # count and cap it: the money is spent either way.
        return telemetry.begin(operation, args, kwargs, traced=is_instrumentation_enabled())
    except Exception:
        logger.exception("spendmeter: starting a span failed; the LLM call is unaffected")
        return None


def _is_stream(call: Call, result: Any) -> bool:
    return call.params.get("stream") is True and (
        hasattr(result, "__next__") or hasattr(result, "__anext__")
    )


def sync_wrapper(telemetry: Telemetry, operation: Operation) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        call = _start(telemetry, operation, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        call.admit()  # a budget's refusal raises here, before any request leaves the process
        try:
            with call:
                result = wrapped(*args, **kwargs)
        except BaseException as error:
            call.fail(error)
            raise
        if _is_stream(call, result):
            call.deactivate()  # the span stays open until the stream ends, but not current
            return TracedStream(result, call)
        try:
            call.succeed(result)  # may raise BudgetExceededError carrying `result`
        finally:
            call.deactivate()
        return result

    return wrapper


def async_wrapper(telemetry: Telemetry, operation: Operation) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        call = _start(telemetry, operation, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        await call.aadmit()
        try:
            with call:
                result = await wrapped(*args, **kwargs)
        except BaseException as error:
            await call.afail(error)
            raise
        if _is_stream(call, result):
            call.deactivate()
            return TracedStream(result, call)
        try:
            await call.asucceed(result)
        finally:
            call.deactivate()
        return result

    return wrapper
