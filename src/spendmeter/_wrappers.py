"""The wrapt wrappers that stand in for LiteLLM's functions.

``call_wrapper`` stands in for a paid call (``completion``, ``aimage_generation``, ...):
start the call (or step aside when it is LiteLLM calling itself), ask its budgets, let it run
with its span current, then hand back LiteLLM's result untouched, a stream behind a proxy.
``request_wrapper`` stands in for what sends one request as several attempts (the Router's
endpoints, ``completion_with_retries``). ``hop_wrapper`` stands in for LiteLLM's bridge that
runs a coroutine from sync code, on a thread of its own when an event loop already runs here.
Sync and async differ only where the language forces it: an async call awaits its budgets, so
that a ledger on the network never blocks the loop.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from spendmeter._attributes import Operation
from spendmeter._call import CURRENT_CALL, Call, Telemetry
from spendmeter._guard import Guard
from spendmeter._requests import CURRENT_REQUEST, Request
from spendmeter._streams import TracedStream

_STARTING_SPAN = Guard("starting a span")
_STARTING_REQUEST = Guard("starting a request span")

# Flags LiteLLM's async functions set when they run their sync twin in a worker thread: that
# inner call is the same call, not a second one.
_ASYNC_HANDOFF_FLAGS = (
    "acompletion",
    "aembedding",
    "atext_completion",
    "aimg_generation",
    "async_call",  # image edits, videos
    "atranscription",
    "aspeech",
    "arerank",
    "aresponses",
    "asearch",
    "is_async",
)
# LiteLLM modules that only pass a call on to its implementation: a call they pass on is made
# by whoever called them.
_PASS_THROUGH: tuple[str, ...] = (
    "litellm.rust_bridge.",
    "litellm.chat_completions.",
    "litellm.embeddings.",
    "litellm.responses.dispatch",
    "litellm.messages.",
)
_NOT_THE_CALLER = ("wrapt", "spendmeter.", *_PASS_THROUGH)


def _caller_module() -> str:
    """The module of the code that called the wrapped LiteLLM function, past wrapt and
    LiteLLM's dispatch modules."""
    frame: FrameType | None = sys._getframe(1)  # spendmeter's own frames are passed over
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if not module.startswith(_NOT_THE_CALLER):
            return module
        frame = frame.f_back
    return ""


def _is_litellm_calling_itself(kwargs: Mapping[str, Any]) -> bool:
    if any(kwargs.get(flag) is True for flag in _ASYNC_HANDOFF_FLAGS):
        return True
    module = _caller_module()
    return module == "litellm" or module.startswith("litellm.")


def _start(
    telemetry: Telemetry, operation: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Call | None:
    """The call, or ``None`` to step aside: LiteLLM calling itself inside a call, or a fault
    of ours. Raises a refusal a budget already gave the request this is an attempt of."""
    parent = CURRENT_CALL.get()
    if parent is not None and _is_litellm_calling_itself(kwargs):
        return None
    request = CURRENT_REQUEST.get() if parent is None else None
    if request is not None and request.refusal is not None:
        raise request.refusal  # a refused request is not sent again, by retry or fallback
    try:
        # Under suppress_instrumentation() the call makes no span, but its budgets still
        # count and cap it: the money is spent either way.
        return telemetry.begin(
            operation,
            args,
            kwargs,
            traced=is_instrumentation_enabled(),
            parent=parent,
            request=request,
        )
    except Exception as error:
        _STARTING_SPAN.failed(error)
        return None


def _as_stream(call: Call, result: Any) -> Any:
    """LiteLLM's stream behind a proxy that finishes the call; ``None`` if not a stream."""
    if isinstance(result, TracedStream):
        # A paid call made inside this one streams the answer and counts it itself.
        call.end_as_request()
        return result
    if call.params.get("stream") is True and (
        hasattr(result, "__next__") or hasattr(result, "__anext__")
    ):
        call.deactivate()  # the span stays open until the stream ends, but not current
        return TracedStream(result, call)
    return None


def call_wrapper(telemetry: Telemetry, operation: Operation) -> Any:
    if operation.is_async:

        async def async_call(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
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
            stream = _as_stream(call, result)
            if stream is not None:
                return stream
            try:
                await call.asucceed(result)
            finally:
                call.deactivate()
            return result

        return async_call

    def sync_call(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
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
        stream = _as_stream(call, result)
        if stream is not None:
            return stream
        try:
            call.succeed(result)  # may raise BudgetExceededError carrying `result`
        finally:
            call.deactivate()
        return result

    return sync_call


def request_wrapper(telemetry: Telemetry, operation: str, *, router: bool, is_async: bool) -> Any:
    """The wrapper of a function that sends one request as attempts (``operation`` names it)."""

    def begin(kwargs: Mapping[str, Any]) -> Request | None:
        if CURRENT_CALL.get() is not None:
            return None  # LiteLLM retrying inside a call: that call is the request
        with _STARTING_REQUEST:
            return Request(
                telemetry, operation, kwargs, router=router, traced=is_instrumentation_enabled()
            )
        return None

    if is_async:

        async def async_request(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            request = begin(kwargs)
            if request is None:
                return await wrapped(*args, **kwargs)
            await request.aadmit()
            try:
                with request:
                    result = wrapped(*args, **kwargs)
                    if inspect.isawaitable(result):
                        result = await result
            except BaseException as error:
                _raise_final(request, error)
            return request.succeed(result)

        return async_request

    def sync_request(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        request = begin(kwargs)
        if request is None:
            return wrapped(*args, **kwargs)
        request.admit()
        try:
            with request:
                result = wrapped(*args, **kwargs)
        except BaseException as error:
            _raise_final(request, error)
        return request.succeed(result)

    return sync_request


def _raise_final(request: Request, error: BaseException) -> None:
    final = request.fail(error)
    if final is error:
        raise error
    raise final from error


def hop_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """LiteLLM's ``run_async_function(async_function, *args, **kwargs)``: the coroutine runs
    with the call (or request) running here, and its context. LiteLLM runs it on a new thread
    when a loop already runs on this one (sync ``completion(fallbacks=...)`` inside an async
    app), which starts with no context: the call it makes for this one would be counted again.
    """
    call, request = CURRENT_CALL.get(), CURRENT_REQUEST.get()
    if call is None and request is None:
        return wrapped(*args, **kwargs)
    if args:
        function, rest = args[0], args[1:]
    else:
        kwargs = dict(kwargs)
        function, rest = kwargs.pop("async_function"), ()
    context = otel_context.get_current()

    async def carried(*inner_args: Any, **inner_kwargs: Any) -> Any:
        # Set in the task running this coroutine: its context is its own, gone when it ends.
        CURRENT_CALL.set(call)
        CURRENT_REQUEST.set(request)
        otel_context.attach(context)
        return await function(*inner_args, **inner_kwargs)

    return wrapped(carried, *rest, **kwargs)
