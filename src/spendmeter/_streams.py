"""One wrapt proxy for LiteLLM's sync and async streams.

The caller gets an object that behaves like LiteLLM's own stream (attributes, ``isinstance``,
iteration), while spendmeter watches each chunk and finishes the call's span exactly once:
when the stream is exhausted, fails, is closed, is cancelled or is garbage-collected.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import wrapt
from opentelemetry import context as otel_context

from spendmeter import semconv as sc
from spendmeter._attributes import field, output_message
from spendmeter._call import Call, Outcome
from spendmeter._guard import guarded
from spendmeter._usage import TokenUsage, token_usage
from spendmeter.errors import BudgetExceededError

logger = logging.getLogger("spendmeter")

# The events that end a Responses API stream; each carries the response with its usage.
_RESPONSES_FINAL_EVENTS = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)


class _Seen:
    """The chunks seen so far. A chunk only costs a list append on the way through (LiteLLM
    keeps every chunk itself, so this holds no extra objects); they are read once, at the end.
    """

    __slots__ = (
        "_text",
        "chunks",
        "final_response",
        "finish_reasons",
        "first_chunk_at",
        "response_id",
        "response_model",
        "usage",
    )

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self._text: str | None = None
        self.first_chunk_at: float | None = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.usage: Any = None
        self.final_response: Any = None  # a Responses API stream's final response
        self.finish_reasons: list[str] = []

    def keep(self, chunk: Any) -> None:
        if not self.chunks:
            self.first_chunk_at = time.perf_counter()
        self.chunks.append(chunk)

    def read(self) -> None:
        """Read what the chunks say: id and model, finish reasons, the final usage."""
        chunks = self.chunks
        if chunks:
            self.response_id = field(chunks[0], "id")
            self.response_model = field(chunks[0], "model")
        for chunk in chunks:
            # LiteLLM only sets `usage` on a chunk that carries it (the final one).
            usage = field(chunk, "usage")
            if usage is not None:
                self.usage = usage
            if field(chunk, "type") in _RESPONSES_FINAL_EVENTS:
                self._read_final_response(field(chunk, "response"))
            for choice in field(chunk, "choices") or ():
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

    def reasoning(self) -> str:
        """The streamed reasoning content, put together when content is captured."""
        return "".join(
            reasoning
            for chunk in self.chunks
            for choice in field(chunk, "choices") or ()
            if isinstance(reasoning := field(field(choice, "delta"), "reasoning_content"), str)
        )

    def text(self) -> str:
        """The streamed text, put together on first use: only when needed (no usage came, or
        content is captured), as it touches every choice of every chunk."""
        if self._text is None:
            self._text = "".join(self._texts())
        return self._text

    def _texts(self) -> Iterator[str]:
        for chunk in self.chunks:
            for choice in field(chunk, "choices") or ():
                delta = field(choice, "delta")
                # Text completions stream choices with a `text` and no delta.
                text = field(choice, "text") if delta is None else field(delta, "content")
                if text:
                    yield text


class TracedStream(wrapt.ObjectProxy):  # type: ignore[type-arg]  # proxies any stream
    """Proxy for ``CustomStreamWrapper`` and ``TextCompletionStreamWrapper``, sync or async."""

    def __init__(self, wrapped: Any, call: Call) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_seen = _Seen()
        self._self_finished = False
        self._self_user_error: BaseException | None = None

    # --- sync iteration -------------------------------------------------------------------
    def __iter__(self) -> TracedStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = self.__wrapped__.__next__() if self._self_seen.chunks else self._self_first()
        except StopIteration:
            self._self_finish(None)
            raise
        except BaseException as error:
            self._self_finish(error)
            raise
        self._self_seen.keep(chunk)
        return chunk

    def close(self) -> None:
        try:
            close = getattr(self.__wrapped__, "close", None)
            if close is not None:
                close()
        finally:
            self._self_finish(None)

    def __enter__(self) -> TracedStream:
        return self

    def __exit__(self, error_type: Any, error: BaseException | None, traceback: Any) -> None:
        self._self_user_error = error  # the stream is still priced, its span marked failed
        self.close()

    # --- async iteration ------------------------------------------------------------------
    def __aiter__(self) -> TracedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            if self._self_seen.chunks:
                chunk = await self.__wrapped__.__anext__()
            else:
                chunk = await self._self_afirst()
        except StopAsyncIteration:
            await self._self_afinish(None)
            raise
        except BaseException as error:  # CancelledError included: the span must still end
            await self._self_afinish(error)
            raise
        self._self_seen.keep(chunk)
        return chunk

    async def aclose(self) -> None:
        try:
            aclose = getattr(self.__wrapped__, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            await self._self_afinish(None)

    async def __aenter__(self) -> TracedStream:
        return self

    async def __aexit__(self, error_type: Any, error: BaseException | None, traceback: Any) -> None:
        self._self_user_error = error
        await self.aclose()

    def __del__(self) -> None:
        self._self_finish(None)

    # --- until the first chunk ------------------------------------------------------------
    # LiteLLM may make the provider SDK's call only when the first chunk is asked for: it runs
    # in the call's context, so that other GenAI instrumentations step aside for it as they do
    # inside the call (and an HTTP span is the call's child). Later chunks cost no context.
    def _self_first(self) -> Any:
        token = self._self_call.attach()
        try:
            return self.__wrapped__.__next__()
        finally:
            if token is not None:
                otel_context.detach(token)

    async def _self_afirst(self) -> Any:
        token = self._self_call.attach()
        try:
            return await self.__wrapped__.__anext__()
        finally:
            if token is not None:
                otel_context.detach(token)

    # --- bookkeeping ----------------------------------------------------------------------
    def _self_finish(self, error: BaseException | None) -> None:
        outcome = self._self_ending(error)
        if outcome is None:
            return
        try:
            self._self_call.finish(outcome)
        except BudgetExceededError:
            _crossed()
        except Exception:
            logger.exception("spendmeter: finishing a stream's span failed")

    async def _self_afinish(self, error: BaseException | None) -> None:
        call = self._self_call
        if not self._self_finished and error is not None and not isinstance(error, GeneratorExit):
            self._self_finished = True
            await call.afail(error)
            return
        outcome = self._self_ending(None)
        if outcome is None:
            return
        try:
            await call.afinish(outcome)
        except BudgetExceededError:
            _crossed()
        except Exception:
            logger.exception("spendmeter: finishing a stream's span failed")

    def _self_ending(self, error: BaseException | None) -> Outcome | None:
        """What the stream brought back, once; ``None`` when done already or it failed."""
        if self._self_finished:
            return None
        self._self_finished = True
        call = self._self_call
        if error is not None and not isinstance(error, GeneratorExit):
            call.fail(error)
            return None
        seen = self._self_seen
        guarded("reading a stream's chunks", seen.read)
        # Each step is guarded on its own: whatever fails, the span still ends.
        usage, estimated, priced = guarded(
            "counting a stream's tokens", _stream_usage, call, seen
        ) or (None, False, None)
        return Outcome(
            usage=usage,
            estimated=estimated,
            response_attributes=guarded(
                "reading a stream's response",
                _response_attributes,
                seen,
                call.telemetry.capture_content,
            ),
            response=None,
            priced=priced,
            stream=None if priced is None else self.__wrapped__,
            first_chunk_delay=(
                None if seen.first_chunk_at is None else seen.first_chunk_at - call.started
            ),
            error=self._self_user_error,
        )


def _crossed() -> None:
    # A stream that crosses the budget is delivered whole; the next call is refused.
    logger.warning("spendmeter: a streamed call crossed its budget; later calls refused")


def _stream_usage(call: Call, seen: _Seen) -> tuple[TokenUsage | None, bool, Any]:
    """The stream's tokens, whether they were counted locally, and what pricing reads: the chunk
    that carried the usage, or the response assembled from the chunks."""
    if seen.usage is not None:
        usage = token_usage(seen.usage)
        if usage is not None:
            return usage, False, seen.final_response or _usage_chunk(seen)
    usage, assembled = _estimate_usage(call, seen)
    return usage, True, assembled


def _usage_chunk(seen: _Seen) -> Any:
    for chunk in reversed(seen.chunks):  # the usage comes last
        if field(chunk, "usage") is not None:
            return chunk
    return None


def _estimate_usage(call: Call, seen: _Seen) -> tuple[TokenUsage | None, Any]:
    """Count tokens locally, the provider sent no usage (or the stream stopped early): the
    response assembled by LiteLLM's own ``stream_chunk_builder``, which counts what LiteLLM
    bills (text, tool calls, function calls, reasoning) per choice. (LiteLLM assembles one for
    its own logging too, but only after the stream has ended, on its logging thread.) Nothing
    is counted when the user turned LiteLLM's token counter off: unpriced, never $0."""
    import litellm

    if litellm.disable_token_counter or not seen.chunks:
        return None, None
    assembled = litellm.stream_chunk_builder(seen.chunks, messages=_prompt_messages(call.params))
    usage = token_usage(field(assembled, "usage"))
    if usage is None or not (usage.input_tokens or usage.output_tokens):
        return None, None  # nothing was counted (LiteLLM 1.106 reports zeros): unpriced, not $0
    return usage, _without_figure(assembled)


def _without_figure(assembled: Any) -> Any:
    """The assembled response without the cost put on it where it was assembled, which knew
    nothing of the call (service tier, base_model): pricing asks LiteLLM's calculator, told
    what the call was. A copy: LiteLLM's own object may still be read by its logging."""
    hidden = getattr(assembled, "_hidden_params", None)
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


def _response_attributes(seen: _Seen, capture_content: bool) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if isinstance(seen.response_id, str) and seen.response_id:
        found[sc.GEN_AI_RESPONSE_ID] = seen.response_id
    if isinstance(seen.response_model, str) and seen.response_model:
        found[sc.GEN_AI_RESPONSE_MODEL] = seen.response_model
    if seen.finish_reasons:
        found[sc.GEN_AI_RESPONSE_FINISH_REASONS] = seen.finish_reasons
    tier = field(seen.chunks[-1], "service_tier") if seen.chunks else None
    if isinstance(tier, str) and tier:
        found[sc.OPENAI_RESPONSE_SERVICE_TIER] = tier
    if capture_content and seen.chunks:
        reason = seen.finish_reasons[0] if seen.finish_reasons else None
        message = output_message("assistant", seen.text(), seen.reasoning(), None, reason)
        found[sc.GEN_AI_OUTPUT_MESSAGES] = json.dumps([message], ensure_ascii=False)
    return found
