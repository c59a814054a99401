"""One wrapt proxy for LiteLLM's sync and async streams.

The caller gets an object that behaves like LiteLLM's own stream (attributes, ``isinstance``,
iteration), while spendmeter watches each chunk and finishes the call's span exactly once:
when the stream is exhausted, fails, is closed, is cancelled or is garbage-collected.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import partial
from itertools import chain, repeat
from typing import Any, ClassVar

import wrapt
from opentelemetry import context as otel_context

from spendmeter._attributes import output_message, response_attributes
from spendmeter._call import Call, Outcome
from spendmeter._fields import field, private
from spendmeter._guard import Guard
from spendmeter._tokens import (
    COUNT_LIMIT_CHARS,
    count_messages,
    count_text,
    downloads_tokenizer,
    prompt_chars,
    rough_tokens,
)
from spendmeter._usage import TokenUsage, token_usage
from spendmeter.errors import BudgetExceededError
from spendmeter.pricing import Priced

logger = logging.getLogger("spendmeter")

# The events that end a Responses API stream; each carries the response with its usage.
_RESPONSES_FINAL_EVENTS = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)

# The reads of LiteLLM's chat chunks and their choices, as C callables for `map`.
_pydantic_extra = operator.attrgetter("__pydantic_extra__")
_choices = operator.attrgetter("choices")
_is_not_none = partial(operator.is_not, None)


@functools.cache
def _chat_chunk_type() -> type | None:
    """LiteLLM's chat chunk class, if it declares the fields that its quick read relies on:
    ``choices``, and neither ``usage`` nor ``type``, which it then keeps extra."""
    from litellm.types.utils import ModelResponseStream

    chunk_type: type = ModelResponseStream
    declared = ModelResponseStream.model_fields
    return chunk_type if "choices" in declared and not {"usage", "type"} & declared.keys() else None


class _Choice:
    """One choice of a stream, put together from its deltas: what its output message records
    and what a local count counts."""

    __slots__ = ("finish_reason", "reasoning", "role", "text", "tool_calls")

    def __init__(self) -> None:
        self.role: str | None = None
        self.text: list[str] = []
        self.reasoning: list[str] = []
        # By the index the deltas give: {"id", "name", "arguments" (the streamed pieces)}.
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None

    def add(self, choice: Any) -> None:
        reason = field(choice, "finish_reason")
        if reason:
            self.finish_reason = str(reason)
        delta = field(choice, "delta")
        if delta is None:  # text completions stream choices with a `text` and no delta
            _append(self.text, field(choice, "text"))
            return
        role = field(delta, "role")
        if isinstance(role, str) and role:
            self.role = role
        _append(self.text, field(delta, "content"))
        _append(self.reasoning, field(delta, "reasoning_content"))
        for call in field(delta, "tool_calls") or ():
            self._add_tool_call(call)

    def _add_tool_call(self, call: Any) -> None:
        index = field(call, "index")
        key = index if isinstance(index, int) else len(self.tool_calls)
        so_far = self.tool_calls.setdefault(key, {"id": None, "name": None, "arguments": []})
        if field(call, "id"):
            so_far["id"] = field(call, "id")
        function = field(call, "function")
        if field(function, "name"):  # sent once, with the call's first delta
            so_far["name"] = field(function, "name")
        _append(so_far["arguments"], field(function, "arguments"))

    def pieces(self) -> list[str]:
        """Every piece of text the choice streamed: text, reasoning, tool names and arguments."""
        found = [*self.text, *self.reasoning]
        for call in self.tool_calls.values():
            found.extend([call["name"] or "", *call["arguments"]])
        return found

    def message(self) -> dict[str, Any]:
        calls = [
            {
                "id": call["id"],
                "function": {"name": call["name"], "arguments": "".join(call["arguments"])},
            }
            for _, call in sorted(self.tool_calls.items())
        ]
        return output_message(
            self.role,
            "".join(self.text),
            "".join(self.reasoning),
            calls,
            self.finish_reason,
        )


def _append(pieces: list[str], piece: Any) -> None:
    if isinstance(piece, str) and piece:
        pieces.append(piece)


class _Seen:
    """The chunks seen so far. A chunk only costs a list append on the way through (LiteLLM
    keeps every chunk itself, so this holds no extra objects); they are read once, at the end.
    It also holds the stream's own ``__next__`` and ``__anext__``, read once: the pass-throughs
    call them for every chunk, and a read through the proxy costs one of wrapt's attribute
    lookups, about 0.3 us.
    """

    __slots__ = (
        "_choices",
        "chunks",
        "final_response",
        "finish_reasons",
        "first_chunk_at",
        "next_async_chunk",
        "next_chunk",
        "response_id",
        "response_model",
        "usage",
    )

    def __init__(self, stream: Any) -> None:
        # What next() and anext() of the stream itself would do, and raise, if it is not one.
        self.next_chunk: Callable[[], Any] = getattr(stream, "__next__", None) or partial(
            next, stream
        )
        self.next_async_chunk: Callable[[], Awaitable[Any]] = getattr(
            stream, "__anext__", None
        ) or partial(anext, stream)
        self.chunks: list[Any] = []
        self._choices: list[_Choice] | None = None
        self.first_chunk_at: float | None = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.usage: Any = None
        self.final_response: Any = None  # a Responses API stream's final response
        self.finish_reasons: list[str] = []

    def read(self) -> None:
        """Read what the chunks say: id and model, finish reasons, the final usage."""
        chunks = self.chunks
        if chunks:
            self.response_id = field(chunks[0], "id")
            self.response_model = field(chunks[0], "model")
        if not self._read_chat_chunks(chunks):
            self._read_any_chunks(chunks)

    def _read_chat_chunks(self, chunks: list[Any]) -> bool:
        """The read of LiteLLM's own chat chunks, every one of them a ``ModelResponseStream``:
        the same as ``_read_any_chunks``, in loops that run in C, since this is most of what a
        chunk costs. False, with nothing read, for any other chunks or any chunk it does not
        expect: ``_read_any_chunks`` reads those."""
        if not chunks or set(map(type, chunks)) != {_chat_chunk_type()}:
            return False
        try:
            extras = map(_pydantic_extra, chunks)
            if any(map(dict.__contains__, extras, repeat("type"))):  # a Responses API event?
                return False
            choices = map(_pydantic_extra, chain.from_iterable(map(_choices, chunks)))
            # LiteLLM keeps a choice's fields extra.
            reasons = list(filter(None, map(dict.__getitem__, choices, repeat("finish_reason"))))
            # LiteLLM only sets `usage` on a chunk that carries it (the final one).
            last_first = map(_pydantic_extra, reversed(chunks))
            usage = next(filter(_is_not_none, map(dict.get, last_first, repeat("usage"))), None)
        except (AttributeError, KeyError, TypeError):  # a chunk or choice built another way
            return False
        self.finish_reasons.extend(map(str, reasons))
        self.usage = usage
        return True

    def _read_any_chunks(self, chunks: list[Any]) -> None:
        for chunk in chunks:
            # `field()` of each name, inline for LiteLLM's pydantic chunks: this loop runs once
            # per chunk, and a call per field would be most of a chunk's cost.
            own = getattr(chunk, "__dict__", None)
            extra = getattr(chunk, "__pydantic_extra__", None)
            if type(own) is dict and type(extra) is dict:
                usage = own["usage"] if "usage" in own else extra.get("usage")
                kind = own["type"] if "type" in own else extra.get("type")
                choices = own["choices"] if "choices" in own else extra.get("choices")
            else:
                usage, kind = field(chunk, "usage"), field(chunk, "type")
                choices = field(chunk, "choices")
            if usage is not None:
                self.usage = usage
            if kind in _RESPONSES_FINAL_EVENTS:
                self._read_final_response(field(chunk, "response"))
            for choice in choices or ():
                # LiteLLM's choices keep every field extra.
                extra = getattr(choice, "__pydantic_extra__", None)
                if type(extra) is dict and "finish_reason" in extra:
                    reason = extra["finish_reason"]
                else:
                    reason = field(choice, "finish_reason")
                if reason:
                    self.finish_reasons.append(str(reason))

    def _read_final_response(self, response: Any) -> None:
        """A Responses API stream ends with an event that carries the whole response."""
        if response is None:
            return
        self.final_response = response
        self.response_id = field(response, "id") or self.response_id
        self.response_model = field(response, "model") or self.response_model
        self.usage = field(response, "usage") or self.usage
        status = field(response, "status")
        if status:
            self.finish_reasons.append(str(status))

    def choices(self) -> list[_Choice]:
        """Each choice put together, in index order, on first use: only when needed (content
        is captured, or tokens are counted without LiteLLM's assembling)."""
        if self._choices is None:
            by_index: dict[int, _Choice] = {}
            for chunk in self.chunks:
                for choice in field(chunk, "choices") or ():
                    index = field(choice, "index")
                    key = index if isinstance(index, int) else 0
                    by_index.setdefault(key, _Choice()).add(choice)
            self._choices = [by_index[key] for key in sorted(by_index)]
        return self._choices

    def output_chars(self) -> int:
        return sum(len(piece) for choice in self.choices() for piece in choice.pieces())


class _Ending:
    """What ends a stream's span, exactly once: when the stream is exhausted, fails, is closed
    or is cancelled, or else when it is collected. The proxy holds it, and so does each of its
    pass-throughs, which hold no reference to the proxy: a stream dropped unfinished ends as
    soon as it is dropped, while a pass-through still held (``await anext(stream)`` on a
    stream nobody else keeps) keeps it going."""

    __slots__ = ("call", "error", "finished", "seen", "stream")

    def __init__(self, stream: Any, call: Call) -> None:
        self.stream = stream  # LiteLLM's own, which pricing may ask about the call
        self.call = call
        self.seen = _Seen(stream)
        self.finished = False
        # What ended the stream as failed: the caller's own code (inside `with stream:`), the
        # stream's error or a cancellation.
        self.error: BaseException | None = None

    def __del__(self) -> None:
        # Collected unfinished (a loop broken out of): maybe on an event loop, maybe on
        # whatever thread runs the collector, so priced from the rough count, no tokenizer.
        self.finish(None, rough=True)

    def _failed_unpaid(self, error: BaseException | None) -> bool:
        """Whether the stream failed before its first chunk: then it ends as a failed plain call
        does, with nothing spent. Failed or cancelled later, the chunks that came were paid for:
        the stream is priced and counted like one broken out of, and ``error`` marks it failed.
        """
        if not _failed(error):
            return False
        if not self.seen.chunks:
            return True
        self.error = error
        return False

    def _claim(self) -> bool:
        """Whether this ending is the stream's first: a stream finishes exactly once."""
        if self.finished:
            return False
        self.finished = True
        return True

    def finish(self, error: BaseException | None, *, rough: bool = False) -> None:
        if not self._claim():
            return
        call = self.call
        if self._failed_unpaid(error):
            call.fail(error)  # type: ignore[arg-type]
            return
        _read_chunks(self.seen)
        outcome = self._outcome(rough)
        try:
            call.finish(outcome)
        except BudgetExceededError:
            _crossed()
        except Exception:
            logger.exception("spendmeter: finishing a stream's span failed")

    async def afinish(self, error: BaseException | None) -> None:
        if not self._claim():
            return
        if self._failed_unpaid(error):
            await self.call.afail(error)  # type: ignore[arg-type]
            return
        await _to_the_end(self._aend())

    async def _aend(self) -> None:
        """An async stream's ending. A stream without usage is counted and priced in a worker
        thread: assembling and counting it takes milliseconds, a long prompt far more, which
        the event loop would stand still for."""
        seen, call = self.seen, self.call
        _read_chunks(seen)
        pricing = None
        if seen.usage is None:
            try:
                outcome, pricing = await asyncio.to_thread(self._priced)
            except RuntimeError:  # the loop's executor is shut down: the span still ends
                outcome, pricing = self._priced()
        else:
            outcome = self._outcome(rough=False)
        try:
            await call.afinish(outcome, pricing)
        except BudgetExceededError:
            _crossed()
        except Exception:
            logger.exception("spendmeter: finishing a stream's span failed")

    def _priced(self) -> tuple[Outcome, Priced]:
        outcome = self._outcome(rough=False)
        return outcome, self.call.priced(outcome)

    def _outcome(self, rough: bool) -> Outcome:
        """What the stream brought back, its chunks read; ``rough``: count no token exactly."""
        call, seen = self.call, self.seen
        usage, estimated, priced = _count_stream(call, seen, rough) or (None, False, None)
        return Outcome(
            usage=usage,
            estimated=estimated,
            response_attributes=_read_response(seen, call.telemetry.capture_content),
            response=None,
            priced=priced,
            stream=None if priced is None else self.stream,
            first_chunk_delay=(
                None if seen.first_chunk_at is None else seen.first_chunk_at - call.started
            ),
            error=self.error,
        )


class _PassThrough(property):
    """``__next__`` and ``__anext__`` of a stream: read on the stream, the pass-through in its
    slot. CPython looks these up on the type and calls what it finds, so next() and anext()
    call the stream's own closure (``_passed_through``, ``_async_passed_through``) and run no
    method of the proxy: a method would pay for a Python call and for reads of the proxy's
    slots, on every chunk. Called on the class (``TracedStream.__next__(stream)``), it does
    what a method would."""

    def __call__(self, stream: TracedStream) -> Any:
        return self.fget(stream)()  # type: ignore[misc]


class TracedStream(wrapt.ObjectProxy):  # type: ignore[type-arg]  # proxies any stream
    """Proxy for ``CustomStreamWrapper`` and ``TextCompletionStreamWrapper``, sync or async."""

    __slots__ = ("_self_anext", "_self_ending", "_self_next")

    def __init__(self, wrapped: Any, call: Call) -> None:
        super().__init__(wrapped)
        ending = self._self_ending = _Ending(wrapped, call)
        self._self_next: Callable[[], Any] = _passed_through(ending)
        self._self_anext: Callable[[], Awaitable[Any]] = _async_passed_through(ending)

    # --- sync iteration -------------------------------------------------------------------
    __next__: ClassVar[_PassThrough]  # set below the class, which makes the slot it reads

    def __iter__(self) -> TracedStream:
        return self

    def close(self) -> None:
        try:
            close = getattr(self.__wrapped__, "close", None)
            if close is not None:
                close()
        finally:
            self._self_ending.finish(None)

    def __enter__(self) -> TracedStream:
        return self

    def __exit__(self, error_type: Any, error: BaseException | None, traceback: Any) -> None:
        self._self_ending.error = error  # the stream is still priced, its span failed
        self.close()

    # --- async iteration ------------------------------------------------------------------
    __anext__: ClassVar[_PassThrough]  # as `__next__`

    def __aiter__(self) -> TracedStream:
        return self

    async def aclose(self) -> None:
        try:
            aclose = getattr(self.__wrapped__, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            await self._self_ending.afinish(None)

    async def __aenter__(self) -> TracedStream:
        return self

    async def __aexit__(self, error_type: Any, error: BaseException | None, traceback: Any) -> None:
        self._self_ending.error = error
        await self.aclose()


TracedStream.__next__ = _PassThrough(TracedStream.__dict__["_self_next"].__get__)
TracedStream.__anext__ = _PassThrough(TracedStream.__dict__["_self_anext"].__get__)


def _passed_through(ending: _Ending) -> Callable[[], Any]:
    """What next() of a sync stream calls: each chunk of the stream, noted on the way through;
    the span finished when the stream ends or fails."""
    seen = ending.seen
    keep, pull = seen.chunks.append, seen.next_chunk
    started = False

    def next_chunk() -> Any:
        nonlocal started
        try:
            if started:
                chunk = pull()
            else:
                chunk = _first_chunk(seen, ending.call)
                started = True
        except StopIteration:
            ending.finish(None)
            raise
        except BaseException as error:
            ending.finish(error)
            raise
        keep(chunk)
        return chunk

    return next_chunk


def _async_passed_through(ending: _Ending) -> Callable[[], Awaitable[Any]]:
    """What anext() of an async stream awaits: as ``_passed_through``."""
    seen = ending.seen
    keep, pull = seen.chunks.append, seen.next_async_chunk
    started = False

    async def next_chunk() -> Any:
        nonlocal started
        try:
            if started:
                chunk = await pull()
            else:
                chunk = await _first_async_chunk(seen, ending.call)
                started = True
        except StopAsyncIteration:
            await ending.afinish(None)
            raise
        except BaseException as error:  # CancelledError included: the span must still end
            await ending.afinish(error)
            raise
        keep(chunk)
        return chunk

    return next_chunk


# LiteLLM may make the provider SDK's call only when the first chunk is asked for: it runs in
# the call's context, so that other GenAI instrumentations step aside for it as they do inside
# the call (and an HTTP span is the call's child). Later chunks cost no context.
def _first_chunk(seen: _Seen, call: Call) -> Any:
    token = call.attach()
    try:
        chunk = seen.next_chunk()
    finally:
        if token is not None:
            otel_context.detach(token)
    seen.first_chunk_at = time.perf_counter()
    return chunk


async def _first_async_chunk(seen: _Seen, call: Call) -> Any:
    token = call.attach()
    try:
        chunk = await seen.next_async_chunk()
    finally:
        if token is not None:
            otel_context.detach(token)
    seen.first_chunk_at = time.perf_counter()
    return chunk


# The steps of a stream's ending, each guarded on its own: whatever fails, the span still ends.
@Guard("reading a stream's chunks")
def _read_chunks(seen: _Seen) -> None:
    seen.read()


@Guard("counting a stream's tokens")
def _count_stream(call: Call, seen: _Seen, rough: bool) -> tuple[TokenUsage | None, bool, Any]:
    return _stream_usage(call, seen, rough)


@Guard("reading a stream's response")
def _read_response(seen: _Seen, capture_content: bool) -> Mapping[str, Any]:
    return _response_attributes(seen, capture_content)


def _failed(error: BaseException | None) -> bool:
    return error is not None and not isinstance(error, GeneratorExit)


# Stream endings under way: the loop keeps only weak references to tasks.
_ENDING: set[asyncio.Future[None]] = set()


async def _to_the_end(ending: Coroutine[Any, Any, None]) -> None:
    """Run a stream's ending to its end even if the task awaiting it is cancelled meanwhile:
    the span must still end, and its budget count it."""
    task = asyncio.ensure_future(ending)
    _ENDING.add(task)
    task.add_done_callback(_ENDING.discard)
    await asyncio.shield(task)


def _crossed() -> None:
    # A stream that crosses the budget is delivered whole; the next call is refused.
    logger.warning("spendmeter: a streamed call crossed its budget; later calls refused")


def _stream_usage(call: Call, seen: _Seen, rough: bool) -> tuple[TokenUsage | None, bool, Any]:
    """The stream's tokens, whether they were counted locally, and what pricing reads: the chunk
    that carried the usage, the response assembled from the chunks, or one that carries only
    the local count (``rough``, past the count limit, or a tokenizer LiteLLM would download)."""
    if seen.usage is not None:
        usage = token_usage(seen.usage)
        if usage is not None:
            return usage, False, seen.final_response or _usage_chunk(seen)
    import litellm

    if litellm.disable_token_counter or not seen.chunks:
        # Nothing to count, or the user turned LiteLLM's counter off: unpriced, never $0.
        return None, True, None
    model = seen.response_model if isinstance(seen.response_model, str) else call.info.model
    hub = downloads_tokenizer(model) or downloads_tokenizer(call.info.model)
    if rough or _too_long(call, seen):
        usage = _counted(_rough_usage(call, seen))
    elif hub and not _output_counted_by_litellm(seen):
        usage = _counted(_local_usage(call, seen))
    else:
        return _assembled_usage(call, seen, hub)
    return usage, True, None if usage is None else _usage_response(model, usage)


def _usage_chunk(seen: _Seen) -> Any:
    for chunk in reversed(seen.chunks):  # the usage comes last
        if field(chunk, "usage") is not None:
            return chunk
    return None


def _too_long(call: Call, seen: _Seen) -> bool:
    return prompt_chars(call.params) + seen.output_chars() > COUNT_LIMIT_CHARS


def _rough_usage(call: Call, seen: _Seen) -> TokenUsage:
    return TokenUsage(
        input_tokens=rough_tokens(prompt_chars(call.params)),
        output_tokens=rough_tokens(seen.output_chars()),
    )


def _output_counted_by_litellm(seen: _Seen) -> bool:
    """Whether LiteLLM knows the output's tokens from the chunks themselves (a usage it keeps
    on a chunk's hidden params): then ``stream_chunk_builder`` counts no output, and fetches no
    tokenizer for it; its prompt is counted by spendmeter's own counter."""
    from litellm.litellm_core_utils.streaming_chunk_builder_utils import ChunkProcessor

    return any(
        getattr(ChunkProcessor.extract_usage_chunk(chunk), "completion_tokens", None)
        for chunk in seen.chunks
    )


def _local_usage(call: Call, seen: _Seen) -> TokenUsage:
    """Counted as ``stream_chunk_builder`` counts (the prompt's messages; each choice's
    output), by spendmeter's tokenizer: ``stream_chunk_builder`` would download one."""
    model = call.info.model
    messages = _prompt_messages(call.params)
    return TokenUsage(
        input_tokens=count_messages(model, messages) if messages else 0,
        output_tokens=sum(
            count_text(model, "".join(choice.pieces()), response=True) for choice in seen.choices()
        ),
    )


def _counted(usage: TokenUsage) -> TokenUsage | None:
    return usage if usage.input_tokens or usage.output_tokens else None


def _usage_response(model: str, usage: TokenUsage) -> Any:
    """A response that carries only the local count: what LiteLLM's calculator prices."""
    import litellm

    return litellm.ModelResponse(
        model=model,
        usage=litellm.Usage(
            prompt_tokens=usage.input_tokens,
            completion_tokens=usage.output_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens,
        ),
    )


def _assembled_usage(call: Call, seen: _Seen, hub: bool) -> tuple[TokenUsage | None, bool, Any]:
    """Count tokens locally, the provider sent no usage (or the stream stopped early): the
    response assembled by LiteLLM's own ``stream_chunk_builder``, which counts what LiteLLM
    bills (text, tool calls, function calls, reasoning) per choice. (LiteLLM assembles one for
    its own logging too, but only after the stream has ended, on its logging thread.) For a
    model whose tokenizer LiteLLM would download (``hub``), spendmeter counts the prompt."""
    import litellm

    messages = _prompt_messages(call.params)

    def count_prompt() -> int:
        return count_messages(call.info.model, messages or ())

    assembled = litellm.stream_chunk_builder(
        seen.chunks, messages=messages, count_prompt_tokens=count_prompt if hub else None
    )
    usage = token_usage(field(assembled, "usage"))
    if usage is None or _counted(usage) is None:
        return None, True, None  # nothing was counted (LiteLLM 1.106 reports zeros): unpriced
    return usage, True, _without_figure(assembled)


def _without_figure(assembled: Any) -> Any:
    """The assembled response without the cost put on it where it was assembled, which knew
    nothing of the call (service tier, base_model): pricing asks LiteLLM's calculator, told
    what the call was. A copy: LiteLLM's own object may still be read by its logging."""
    hidden = private(assembled, "_hidden_params")
    if not isinstance(hidden, dict) or "response_cost" not in hidden:
        return assembled
    copy = assembled.model_copy()
    copy._hidden_params = {key: value for key, value in hidden.items() if key != "response_cost"}
    return copy


def _prompt_messages(params: Any) -> Any:
    messages = params.get("messages")
    if messages is None and isinstance(params.get("prompt"), str):
        # As LiteLLM's text_completion turns its prompt into a chat message.
        return [{"role": "user", "content": params["prompt"]}]
    return messages


def _response_attributes(seen: _Seen, capture_content: bool) -> Mapping[str, Any]:
    choices = seen.choices() if capture_content else ()
    return response_attributes(
        seen.response_id,
        seen.response_model,
        seen.finish_reasons,
        field(seen.chunks[-1], "service_tier") if seen.chunks else None,
        output_messages=[choice.message() for choice in choices] or None,
    )
