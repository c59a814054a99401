"""Faults: a dead or hanging collector, threads and tasks, broken streams, faults inside every
telemetry step, malformed responses and bad configuration.

In each, the app's calls succeed unchanged, and nothing that could be kept is lost.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
from litellm import CustomLLM, ModelResponse
from litellm.types.utils import GenericStreamingChunk, ModelResponseStream, Usage
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from spendmeter import BudgetSpanProcessor, LiteLLMInstrumentor, config
from spendmeter import semconv as sc
from spendmeter.config import ConfigError
from spendmeter.pricing import PricingConfigError
from tests._support import (
    ANSWER,
    FAKE_MODEL,
    MESSAGES,
    FakeProvider,
    Telemetry,
    answer,
    ask_fake,
    chat,
    fake_call_cost,
    registered_provider,
)

# Powers of two: every sum of these costs is exact in binary floating point, so totals
# counted in different orders by different threads must agree to the last bit.
EXACT_PRICES = {FAKE_MODEL: {"input_cost_per_token": 2.0**-20, "output_cost_per_token": 2.0**-19}}
EXACT_CALL_COST = fake_call_cost(EXACT_PRICES)


def llm_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [span for span in telemetry.spans() if span.kind is SpanKind.CLIENT]


def duration_count(telemetry: Telemetry) -> int:
    return sum(point.count for point in telemetry.points(sc.METRIC_OPERATION_DURATION))


# --- the collector is down, or accepts and never answers ------------------------------------

EXPORT_TIMEOUT_S = 10.0


@pytest.fixture(params=["closed port", "never answers"])
def dead_collector(request: pytest.FixtureRequest) -> Iterator[tuple[str, socket.socket | None]]:
    """A loopback endpoint nothing listens on, or one that accepts and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    if request.param == "closed port":
        server.close()
        yield f"http://127.0.0.1:{port}", None
        return
    server.listen(64)
    yield f"http://127.0.0.1:{port}", server
    server.close()


def _hang_up(server: socket.socket) -> int:
    """Close every connection waiting on the server; how many there were."""
    server.settimeout(0)
    count = 0
    while True:
        try:
            connection, _ = server.accept()
        except BlockingIOError:
            server.close()
            return count
        connection.close()
        count += 1


def test_a_dead_or_hanging_collector_never_blocks_or_fails_a_call(
    dead_collector: tuple[str, socket.socket | None], make_telemetry: Any, instrument: Any
) -> None:
    endpoint, server = dead_collector
    span_exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=EXPORT_TIMEOUT_S)
    metric_exporter = OTLPMetricExporter(
        endpoint=f"{endpoint}/v1/metrics", timeout=EXPORT_TIMEOUT_S
    )
    # Exports start while the calls run: every few spans, and every few milliseconds.
    telemetry = make_telemetry(
        first=lambda _: BatchSpanProcessor(
            span_exporter, schedule_delay_millis=10, max_export_batch_size=5
        ),
        readers=[PeriodicExportingMetricReader(metric_exporter, export_interval_millis=10)],
    )
    budget = BudgetSpanProcessor(1_000.0, meter_provider=telemetry.meter_provider)
    telemetry.tracer_provider.add_span_processor(budget)
    instrument(telemetry)
    try:
        started = time.monotonic()
        responses = [chat() for _ in range(100)]
        elapsed = time.monotonic() - started
    finally:
        LiteLLMInstrumentor().uninstrument()
        # Shut the exporters first: they stop retrying, so the providers shut down at once.
        span_exporter.shutdown()
        metric_exporter.shutdown()
        # Hang up on the exporters still waiting for an answer, so that they give up now.
        hung_up = _hang_up(server) if server is not None else None
        budget.shutdown()
        telemetry.tracer_provider.shutdown()

    assert elapsed < EXPORT_TIMEOUT_S / 2
    if server is not None:
        assert hung_up, "no exporter ever connected: the test proved nothing"
    assert [response.choices[0].message.content for response in responses] == [ANSWER] * 100
    assert len(telemetry.spans()) == 100
    assert budget.request_count == 100
    assert duration_count(telemetry) == 100


# --- threads and tasks ------------------------------------------------------------------------


def assert_nothing_lost(
    telemetry: Telemetry, budget: BudgetSpanProcessor, calls: int, parents: dict[str, Any]
) -> None:
    """Every call made one span under its own parent, and every total is exact."""
    spans = llm_spans(telemetry)
    assert len(spans) == calls
    for span in spans:
        parent = parents[span.attributes[sc.USER_ID]]
        assert span.parent is not None
        assert span.parent.span_id == parent.context.span_id
        assert span.context.trace_id == parent.context.trace_id
        assert span.attributes[sc.GEN_AI_USAGE_COST] == EXACT_CALL_COST
    assert telemetry.metric_sum(sc.METRIC_COST) == calls * EXACT_CALL_COST
    assert telemetry.metric_sum(sc.METRIC_TOKEN_USAGE) == calls * (12 + 7)
    assert duration_count(telemetry) == calls
    assert budget.request_count == calls
    assert budget.total_cost == calls * EXACT_CALL_COST


def test_sixteen_threads_lose_no_span_point_or_dollar(
    instrument: Any, fake_provider: FakeProvider, budget: BudgetSpanProcessor
) -> None:
    telemetry = instrument(pricing=EXACT_PRICES)
    tracer = telemetry.tracer_provider.get_tracer("app")
    parents: dict[str, Any] = {}
    start = threading.Barrier(16)

    def work(thread: int) -> None:
        start.wait()
        for index in range(25):
            user = f"thread-{thread}-{index}"
            with tracer.start_as_current_span(f"request {user}") as parent:
                parents[user] = parent
                response = ask_fake(user=user)
                assert response.choices[0].message.content == "ok"

    threads = [threading.Thread(target=work, args=(number,)) for number in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert_nothing_lost(telemetry, budget, 16 * 25, parents)


@pytest.mark.slow
async def test_a_thousand_tasks_lose_no_span_point_or_dollar(
    instrument: Any, fake_provider: FakeProvider, budget: BudgetSpanProcessor
) -> None:
    telemetry = instrument(pricing=EXACT_PRICES)
    tracer = telemetry.tracer_provider.get_tracer("app")
    parents: dict[str, Any] = {}

    async def work(task: int) -> None:
        user = f"task-{task}"
        with tracer.start_as_current_span(f"request {user}") as parent:
            parents[user] = parent
            await asyncio.sleep(0)  # let the other tasks in between the parent and the call
            response = await litellm.acompletion(model=FAKE_MODEL, messages=MESSAGES, user=user)
            assert response.choices[0].message.content == "ok"

    await asyncio.gather(*(work(task) for task in range(1000)))

    assert_nothing_lost(telemetry, budget, 1000, parents)


# --- streams that end badly: every span ends exactly once -------------------------------------


def test_a_stream_kept_only_by_its_next_is_counted_whole(telemetry: Telemetry) -> None:
    chunks = list(iter(chat(stream=True).__next__, None))  # the stream itself is dropped

    [span] = telemetry.spans()
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == ANSWER
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == litellm.token_counter(
        model="gpt-4o-mini", text=ANSWER, count_response_tokens=True
    )


async def test_the_first_chunk_of_a_stream_nobody_keeps_is_counted(telemetry: Telemetry) -> None:
    stream = litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, stream=True
    )
    first = await anext(await stream)  # dropped as soon as anext() has its coroutine

    [span] = telemetry.spans()
    assert first.choices[0].delta.content
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] >= 1


def _spendmeters(objects: list[Any]) -> list[Any]:
    def module(found: Any) -> str:
        own = getattr(found, "__module__", None) if callable(found) else None
        return own if isinstance(own, str) else type(found).__module__

    return [found for found in objects if module(found).startswith("spendmeter")]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_stream_leaves_nothing_to_the_garbage_collector(
    telemetry: Telemetry, is_async: bool
) -> None:
    # An app may run with the collector off, or frozen: a stream must be freed when dropped.
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to look at it
    try:
        if is_async:
            stream = await litellm.acompletion(
                model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, stream=True
            )
            async for _chunk in stream:
                pass
        else:
            stream = chat(stream=True)
            list(stream)
        del stream
        gc.collect()
        left = _spendmeters(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()

    assert left == []
    assert len(telemetry.spans()) == 1


def test_a_streams_next_called_on_its_class_gives_a_chunk(telemetry: Telemetry) -> None:
    stream = chat(stream=True)

    chunk = type(stream).__next__(stream)  # as `type(it).__next__(it)` works for LiteLLM's

    assert isinstance(chunk, ModelResponseStream)
    assert chunk.choices[0].delta.content
    list(stream)
    assert len(telemetry.spans()) == 1


def text_chunk(index: int) -> GenericStreamingChunk:
    """A custom provider's chunk of text, neither the last nor carrying usage."""
    return {
        "text": f"word{index} ",
        "is_finished": False,
        "finish_reason": "",
        "usage": None,
        "index": 0,
        "tool_use": None,
    }


class SlowStreamProvider(CustomLLM):
    """Streams fifty chunks with a pause before each, so that a task can be cancelled mid-way."""

    async def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[GenericStreamingChunk]:
        for index in range(50):
            await asyncio.sleep(0.01)
            yield text_chunk(index)


@pytest.fixture
def slow_stream() -> Iterator[None]:
    saved = list(litellm.custom_provider_map)
    litellm.custom_provider_map = [{"provider": "slowllm", "custom_handler": SlowStreamProvider()}]
    litellm.utils.custom_llm_setup()
    yield
    litellm.custom_provider_map = saved


def assert_ended_once(telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> ReadableSpan:
    gc.collect()
    span = telemetry.span()
    assert duration_count(telemetry) == 1  # finished once: one duration point
    assert "ended span" not in caplog.text  # the SDK warns when end() is called twice
    return span


def test_a_stream_abandoned_half_way_ends_once(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    stream = chat(stream=True)
    next(stream)
    next(stream)
    del stream

    span = assert_ended_once(telemetry, caplog)
    assert span.status.status_code is not StatusCode.ERROR
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED


async def test_an_async_stream_abandoned_half_way_ends_once(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    stream = await litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, stream=True
    )
    await stream.__anext__()
    del stream

    assert_ended_once(telemetry, caplog)


def test_a_stream_dropped_unfinished_ends_as_it_is_dropped(telemetry: Telemetry) -> None:
    stream = chat(stream=True)
    next(stream)
    gc.disable()  # no collection: the span must not wait for the garbage collector
    try:
        del stream
        spans = telemetry.spans()
    finally:
        gc.enable()

    assert len(spans) == 1
    assert spans[0].attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED


class BrokenStreamProvider(CustomLLM):
    """Streams ``after`` chunks, then loses its connection."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def _chunks(self) -> Iterator[GenericStreamingChunk]:
        yield from map(text_chunk, range(self.after))
        raise ConnectionError("the provider hung up")

    def streaming(self, *args: Any, **kwargs: Any) -> Iterator[GenericStreamingChunk]:
        return self._chunks()

    async def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[GenericStreamingChunk]:
        for chunk in self._chunks():
            yield chunk


def _outcomes(stream: Any, steps: int) -> list[str]:
    """What each of ``steps`` next() of ``stream`` gave: a chunk's text, or what it raised."""
    found = []
    for _ in range(steps):
        try:
            found.append(next(stream).choices[0].delta.content)
        except BaseException as error:
            found.append(f"{type(error).__qualname__}: {error}")
    return found


async def _async_outcomes(stream: Any, steps: int) -> list[str]:
    found = []
    for _ in range(steps):
        try:
            found.append((await stream.__anext__()).choices[0].delta.content)
        except BaseException as error:
            found.append(f"{type(error).__qualname__}: {error}")
    return found


def _assert_failed_once(telemetry: Telemetry, error: str) -> None:
    [span] = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.ERROR_TYPE] == error.split(":")[0]
    assert duration_count(telemetry) == 1


@pytest.mark.parametrize("after", [0, 2], ids=["at its first chunk", "mid-way"])
def test_a_stream_that_fails_fails_as_it_does_uninstrumented(instrument: Any, after: int) -> None:
    # Past its failure too: the next chunk asked for does what LiteLLM's stream does.
    with registered_provider("brokenllm", BrokenStreamProvider(after)):
        ask = {"model": "brokenllm/any", "messages": MESSAGES, "stream": True}
        bare = _outcomes(litellm.completion(**ask), after + 2)
        telemetry = instrument()

        assert _outcomes(litellm.completion(**ask), after + 2) == bare
    assert bare[after].startswith(("APIConnectionError", "MidStreamFallbackError"))
    _assert_failed_once(telemetry, bare[after])


@pytest.mark.parametrize("after", [0, 2], ids=["at its first chunk", "mid-way"])
async def test_an_async_stream_that_fails_fails_as_it_does_uninstrumented(
    instrument: Any, after: int
) -> None:
    with registered_provider("brokenllm", BrokenStreamProvider(after)):
        ask = {"model": "brokenllm/any", "messages": MESSAGES, "stream": True}
        bare = await _async_outcomes(await litellm.acompletion(**ask), after + 2)
        telemetry = instrument()

        assert await _async_outcomes(await litellm.acompletion(**ask), after + 2) == bare
    assert bare[after].startswith(("APIConnectionError", "MidStreamFallbackError"))
    _assert_failed_once(telemetry, bare[after])


# Custom providers' models, priced by override: a stream cut short is priced from its chunks.
CUT_SHORT_PRICES = {
    model: {"input_cost_per_token": 2.0**-20, "output_cost_per_token": 2.0**-19}
    for model in ("brokenllm/any", "slowllm/slow")
}


def _assert_counted_as_it_was_paid(
    telemetry: Telemetry, budget: BudgetSpanProcessor, *, chunks_came: bool
) -> None:
    """Failed before its first chunk, nothing was spent; later, the chunks that came were paid
    for: the failed span, the cost metric and the budget all carry the same estimate."""
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    cost = span.attributes.get(sc.GEN_AI_USAGE_COST)
    if not chunks_came:
        assert cost is None
        assert budget.total_cost == 0.0
        return
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED
    assert cost > 0
    assert telemetry.metric_sum(sc.METRIC_COST) == cost
    assert (budget.request_count, budget.total_cost) == (1, cost)


@pytest.mark.parametrize("after", [0, 2], ids=["at its first chunk", "mid-way"])
def test_a_stream_that_fails_is_counted_for_the_chunks_it_delivered(
    instrument: Any, budget: BudgetSpanProcessor, after: int
) -> None:
    telemetry = instrument(pricing=CUT_SHORT_PRICES)
    with registered_provider("brokenllm", BrokenStreamProvider(after)):
        stream = litellm.completion(model="brokenllm/any", messages=MESSAGES, stream=True)
        _outcomes(stream, after + 1)

    _assert_counted_as_it_was_paid(telemetry, budget, chunks_came=after > 0)


@pytest.mark.parametrize("after", [0, 2], ids=["at its first chunk", "mid-way"])
async def test_an_async_stream_that_fails_is_counted_for_the_chunks_it_delivered(
    instrument: Any, budget: BudgetSpanProcessor, after: int
) -> None:
    telemetry = instrument(pricing=CUT_SHORT_PRICES)
    with registered_provider("brokenllm", BrokenStreamProvider(after)):
        stream = await litellm.acompletion(model="brokenllm/any", messages=MESSAGES, stream=True)
        await _async_outcomes(stream, after + 1)

    _assert_counted_as_it_was_paid(telemetry, budget, chunks_came=after > 0)


def test_an_error_in_the_callers_loop_ends_the_stream_once(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    def consume() -> None:
        for _chunk in chat(stream=True):
            raise ValueError("the caller's own bug")

    with pytest.raises(ValueError, match="the caller's own bug"):
        consume()

    span = assert_ended_once(telemetry, caplog)
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] >= 1


def test_an_error_in_the_callers_with_block_ends_the_stream_once(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError), chat(stream=True) as stream:
        next(stream)
        raise ValueError("the caller's own bug")

    assert_ended_once(telemetry, caplog)


async def test_an_error_in_the_callers_async_loop_ends_the_stream_once(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    async def consume() -> None:
        stream = await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, stream=True
        )
        async for _chunk in stream:
            raise ValueError("the caller's own bug")

    with pytest.raises(ValueError, match="the caller's own bug"):
        await consume()

    assert_ended_once(telemetry, caplog)


async def cancel_a_slow_stream_mid_way() -> None:
    """Read a ``slowllm`` stream in a task, and cancel the task once a chunk has come."""
    received = asyncio.Event()

    async def consume() -> None:
        stream = await litellm.acompletion(model="slowllm/slow", messages=MESSAGES, stream=True)
        async for _chunk in stream:
            received.set()

    task = asyncio.create_task(consume())
    await received.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_task_cancelled_while_streaming_ends_its_span_once(
    telemetry: Telemetry, slow_stream: None, caplog: pytest.LogCaptureFixture
) -> None:
    await cancel_a_slow_stream_mid_way()

    span = assert_ended_once(telemetry, caplog)
    assert span.attributes[sc.ERROR_TYPE] == "CancelledError"
    assert span.status.status_code is StatusCode.ERROR


async def test_a_stream_cancelled_mid_way_is_counted_for_the_chunks_it_delivered(
    instrument: Any, budget: BudgetSpanProcessor, slow_stream: None
) -> None:
    telemetry = instrument(pricing=CUT_SHORT_PRICES)
    await cancel_a_slow_stream_mid_way()

    _assert_counted_as_it_was_paid(telemetry, budget, chunks_came=True)
    assert telemetry.span().attributes[sc.ERROR_TYPE] == "CancelledError"


async def test_a_cancelled_acompletion_ends_its_span_once(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    task = asyncio.create_task(
        litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, mock_delay=5
        )
    )
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    span = assert_ended_once(telemetry, caplog)
    assert span.attributes[sc.ERROR_TYPE] == "CancelledError"
    assert span.status.status_code is StatusCode.ERROR


# --- a fault inside each telemetry step ---------------------------------------------------


class InjectedFault(RuntimeError):
    pass


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise InjectedFault("injected")


# (what breaks, the step the log names, whether the budget still counts the call,
#  whether the duration point is still recorded)
PLAIN_CALL_FAULTS = [
    ("spendmeter._attributes.request_attributes", "reading the request", True, True),
    ("spendmeter._attributes.response_attributes", "reading the response", True, True),
    ("spendmeter._call.token_usage", "reading usage", True, True),
    ("spendmeter.pricing.Pricer.price", "pricing", True, True),
    ("spendmeter._litellm.provider_reported_cost", "pricing", True, True),
    ("spendmeter._call.add_pricing_attributes", "annotating the span", True, True),
    (
        "spendmeter.budget.BudgetSpanProcessor.after_call",
        "counting a call in a budget",
        False,
        True,
    ),
    (
        "opentelemetry.sdk.metrics._internal.instrument._Histogram.record",
        "recording metrics",
        True,
        False,
    ),
    (
        "opentelemetry.sdk.metrics._internal.instrument._Counter.add",
        "recording metrics",
        True,
        True,
    ),
]


@pytest.mark.parametrize(
    ("target", "step", "budget_counts", "duration_kept"),
    PLAIN_CALL_FAULTS,
    ids=[fault[0].rsplit(".", 1)[-1] for fault in PLAIN_CALL_FAULTS],
)
def test_a_fault_in_any_step_leaves_the_result_unchanged_and_is_logged(
    telemetry: Telemetry,
    budget: BudgetSpanProcessor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    target: str,
    step: str,
    budget_counts: bool,
    duration_kept: bool,
) -> None:
    untouched = chat(temperature=0.2, user="someone")
    telemetry.exporter.clear()
    monkeypatch.setattr(target, _raise)

    with caplog.at_level(logging.WARNING, logger="spendmeter"):
        response = chat(temperature=0.2, user="someone")

    assert response.choices[0].message.content == ANSWER
    assert response.usage == untouched.usage
    assert response.model == untouched.model
    faults = [record for record in caplog.records if record.exc_info]
    assert faults, "the fault was swallowed without a word"
    assert all(isinstance(record.exc_info[1], InjectedFault) for record in faults)
    assert any(step in record.getMessage() for record in faults)
    # What the fault did not touch is kept: the span ends once, the rest is recorded.
    spans = telemetry.spans()
    assert len(spans) == 1
    assert spans[0].end_time is not None
    assert budget.request_count == (2 if budget_counts else 1)
    assert duration_count(telemetry) == (2 if duration_kept else 1)


@pytest.mark.parametrize(
    ("target", "step"),
    [
        ("spendmeter._streams._Seen.read", "reading a stream's chunks"),
        ("spendmeter._streams._stream_usage", "counting a stream's tokens"),
        ("spendmeter._streams._response_attributes", "reading a stream's response"),
    ],
)
def test_a_fault_while_streaming_leaves_the_chunks_unchanged_and_is_logged(
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    target: str,
    step: str,
) -> None:
    untouched = [chunk.choices[0].delta.content for chunk in chat(stream=True)]
    telemetry.exporter.clear()
    monkeypatch.setattr(target, _raise)

    with caplog.at_level(logging.WARNING, logger="spendmeter"):
        chunks = [chunk.choices[0].delta.content for chunk in chat(stream=True)]

    assert chunks == untouched
    assert "".join(text for text in chunks if text) == ANSWER
    assert any(step in record.getMessage() and record.exc_info for record in caplog.records)
    spans = telemetry.spans()
    assert len(spans) == 1
    assert spans[0].end_time is not None


def test_a_step_that_keeps_failing_warns_once_then_logs_at_debug(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("spendmeter.pricing.Pricer.price", _raise)

    with caplog.at_level(logging.DEBUG, logger="spendmeter"):
        answers = [chat().choices[0].message.content for _ in range(3)]

    assert answers == [ANSWER] * 3
    pricing = [record for record in caplog.records if "pricing failed" in record.getMessage()]
    assert [record.levelno for record in pricing] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert all(isinstance(record.exc_info[1], InjectedFault) for record in pricing)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(telemetry.spans()) == 3


# --- malformed responses from a provider ----------------------------------------------------


class MalformedProvider(CustomLLM):
    """Answers with whatever usage (and fields) a test sets, as a broken provider might."""

    def __init__(self) -> None:
        super().__init__()
        self.usage: Any = None
        self.body: dict[str, Any] = {}

    def completion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        response = answer(**{"model": "malformed", "id": "malformed-1", **self.body})
        if self.usage is not None:
            # Set after validation: the values LiteLLM's own parsing would reject.
            usage = Usage(prompt_tokens=1, completion_tokens=1)
            for name, value in self.usage.items():
                setattr(usage, name, value)
            response.usage = usage
        return response


@pytest.fixture
def malformed() -> Iterator[MalformedProvider]:
    provider = MalformedProvider()
    with registered_provider("badllm", provider):
        yield provider


COST_KEY_PREFIXES = (sc.GEN_AI_USAGE_COST, "spendmeter.cost.")
MALFORMED: dict[str, dict[str, Any]] = {
    "no usage": {},
    "negative counts": {"usage": {"prompt_tokens": -5, "completion_tokens": -3}},
    "string counts": {"usage": {"prompt_tokens": "12", "completion_tokens": "seven"}},
    "None counts": {"usage": {"prompt_tokens": None, "completion_tokens": None}},
    "None fields": {
        "body": {
            "id": None,
            "model": None,
            "choices": [{"index": 0, "finish_reason": None, "message": {"content": None}}],
        }
    },
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("priced", [True, False], ids=["priced model", "unknown model"])
def test_a_malformed_response_never_crashes_and_never_costs_less_than_zero(
    instrument: Any, malformed: MalformedProvider, case: str, priced: bool
) -> None:
    settings = MALFORMED[case]
    malformed.usage = settings.get("usage")
    malformed.body = settings.get("body", {})
    model = "badllm/priced-model" if priced else "badllm/never-heard-of-it"
    prices = {"badllm/priced-model": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}
    telemetry = instrument(pricing=prices)

    response = litellm.completion(model=model, messages=MESSAGES)

    assert response.choices[0].message.content in ("ok", None)
    span = telemetry.span()
    attributes = span.attributes
    assert span.status.status_code is not StatusCode.ERROR
    for key in (sc.GEN_AI_USAGE_INPUT_TOKENS, sc.GEN_AI_USAGE_OUTPUT_TOKENS):
        assert attributes.get(key, 0) >= 0
    cost_keys = [
        key for key in attributes if key.startswith(("gen_ai.usage.cost", "spendmeter.cost"))
    ]
    assert all(attributes[key] >= 0 for key in cost_keys)
    assert telemetry.metric_sum(sc.METRIC_COST) >= 0
    if not priced:
        assert attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
        assert cost_keys == []
        assert telemetry.metric_sum(sc.METRIC_UNPRICED_CALLS) == 1


def test_a_provider_response_litellm_rejects_fails_the_same_way_instrumented(
    instrument: Any, malformed: MalformedProvider
) -> None:
    malformed.body = {"usage": {"prompt_tokens": "twelve", "completion_tokens": "seven"}}
    with pytest.raises(Exception) as bare:
        litellm.completion(model="badllm/any", messages=MESSAGES)
    telemetry = instrument()

    with pytest.raises(type(bare.value)):
        litellm.completion(model="badllm/any", messages=MESSAGES)

    span = telemetry.span()
    assert span.attributes[sc.ERROR_TYPE] == type(bare.value).__qualname__


# --- bad configuration: a clear error at start-up, and nothing patched -------------------------


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


BAD_PRICING = {
    "missing file": (lambda tmp: str(tmp / "nowhere.yaml"), ["nowhere.yaml", "not found"]),
    "malformed YAML": (
        lambda tmp: _write(tmp / "prices.yaml", "gpt-4o-mini: [unclosed\n"),
        ["prices.yaml", "invalid YAML"],
    ),
    "malformed JSON": (
        lambda tmp: _write(tmp / "prices.json", '{"gpt-4o-mini": '),
        ["prices.json", "invalid JSON"],
    ),
    "a price that is not a number": (
        lambda tmp: {"my-model": {"input_cost_per_token": "cheap"}},
        ["my-model", "input_cost_per_token", "cheap"],
    ),
    "a negative price": (
        lambda tmp: {"my-model": {"output_cost_per_token": -1}},
        ["my-model", "output_cost_per_token"],
    ),
    "an entry that is not a mapping": (lambda tmp: {"my-model": 0.001}, ["my-model", "mapping"]),
    "an unknown key": (
        lambda tmp: {"my-model": {"input_cost_per_tokens": 1e-6}},
        ["my-model", "input_cost_per_tokens"],
    ),
    "a list instead of a mapping": (
        lambda tmp: _write(tmp / "prices.yaml", "- gpt-4o-mini\n"),
        ["prices.yaml", "top level"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_PRICING))
def test_bad_pricing_is_an_error_at_start_up_naming_the_problem(
    instrument: Any, tmp_path: Path, case: str
) -> None:
    make, named = BAD_PRICING[case]
    original = litellm.completion

    with pytest.raises(PricingConfigError) as error:
        instrument(pricing=make(tmp_path))

    assert all(part in str(error.value) for part in named), str(error.value)
    assert litellm.completion is original
    assert not LiteLLMInstrumentor().is_instrumented_by_opentelemetry


BAD_ENV = {
    "SPENDMETER_BUDGET_USD": "ten dollars",
    "SPENDMETER_BUDGET_ACTION": "stop",
    "SPENDMETER_BUDGET_WINDOW": "week",
    "SPENDMETER_BUDGET_THRESHOLDS": "0.5,2",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "maybe",
}


@pytest.mark.parametrize("with_budget", [True, False], ids=["with a budget", "without one"])
@pytest.mark.parametrize(("variable", "value"), list(BAD_ENV.items()))
def test_a_bad_environment_value_is_an_error_at_start_up_naming_it(
    instrument: Any,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    with_budget: bool,
) -> None:
    if with_budget:
        monkeypatch.setenv("SPENDMETER_BUDGET_USD", "10")
    monkeypatch.setenv(variable, value)
    original = litellm.completion

    with pytest.raises(ConfigError) as error:
        instrument()

    assert variable in str(error.value)
    assert repr(value) in str(error.value)
    assert litellm.completion is original


@pytest.mark.parametrize("variable", config.BUDGET_COMPANIONS)
def test_a_budget_companion_without_a_budget_is_an_error_naming_both(
    instrument: Any, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    valid = {
        "SPENDMETER_BUDGET_ACTION": "raise",
        "SPENDMETER_BUDGET_THRESHOLDS": "0.5,0.9",
        "SPENDMETER_BUDGET_WINDOW": "day",
        "SPENDMETER_BUDGET_LEDGER": "redis://localhost:6379/0",
        "SPENDMETER_BUDGET_LEDGER_ERROR": "closed",
        "SPENDMETER_BUDGET_LEDGER_TIMEOUT": "2",
    }
    monkeypatch.delenv("SPENDMETER_BUDGET_USD", raising=False)
    monkeypatch.setenv(variable, valid.get(variable, "search-api"))
    original = litellm.completion

    with pytest.raises(ConfigError) as error:
        instrument()

    assert f"{variable} is set but SPENDMETER_BUDGET_USD is not" in str(error.value)
    assert error.value.name == variable
    assert litellm.completion is original


def test_a_missing_pricing_file_in_the_environment_is_an_error_naming_it(
    instrument: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPENDMETER_PRICING_FILE", str(tmp_path / "gone.json"))
    original = litellm.completion

    with pytest.raises(PricingConfigError, match=r"gone\.json.*not found"):
        instrument()

    assert litellm.completion is original


# --- memory stays bounded -----------------------------------------------------------------


def test_per_model_caches_stay_bounded_over_many_distinct_models(
    instrument: Any, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("spendmeter._call.MAX_CACHED_MODELS", 8)
    monkeypatch.setattr("spendmeter._overrides._MAX_CACHED_MODELS", 8)
    telemetry = instrument()

    for index in range(40):
        litellm.completion(model=f"fakellm/model-{index}", messages=MESSAGES)

    caches = LiteLLMInstrumentor()._telemetry
    assert caches is not None
    assert len(caches._models) <= 8
    assert len(caches._warned_unpriced) <= 8
    assert len(caches.pricer.overrides._resolved) <= 8 + 1
    # Bounded caches lose nothing: every call is still traced and counted.
    assert len(telemetry.spans()) == 40
    assert telemetry.metric_sum(sc.METRIC_UNPRICED_CALLS) == 40
