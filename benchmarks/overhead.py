"""Side-by-side overhead of LiteLLM instrumentations, on LiteLLM's mocked calls.

Run it with one command from the repository root::

    bash benchmarks/run.sh                  # builds benchmarks/.venv with '.[bench]', runs this
    bash benchmarks/run.sh --instructions   # adds the callgrind instruction counts
    bash benchmarks/run.sh --memory         # adds the 100,000-call tracemalloc run

or, in any environment where ``pip install -e '.[bench]'`` was run, ``python
benchmarks/overhead.py``. It prints a table and writes everything as JSON to
``benchmarks/results/overhead.json`` (``--out`` picks another path). No call leaves the
process: every call passes ``mock_response``, and LiteLLM's price map is the installed one.

Contenders, each with a pipeline of its own, made once and reused: a ``TracerProvider`` whose
``BatchSpanProcessor`` feeds an exporter that counts and drops spans, and a ``MeterProvider``
whose ``PeriodicExportingMetricReader`` feeds an exporter that drops metrics. Each peer runs
with its defaults, as a user who installs it gets it:

- **bare**: nothing instrumented; every "added" figure is against it;
- **spendmeter**, everything on: spans with tokens and cost, the five instruments, pricing,
  and a ``BudgetSpanProcessor`` (a budget never reached, so it counts every call);
- **OpenInference** (``openinference-instrumentation-litellm``): spans with prompts and
  completions (its default), no metrics;
- **Traceloop** (``opentelemetry-instrumentation-litellm``): spans with prompts and
  completions (its default) and its metrics;
- and, as a yardstick rather than a contender, the **OpenTelemetry floor**: what spendmeter
  asks of the SDK per plain call and nothing else, with constant values: a CLIENT span with
  4 start and 14 end attributes, one ``Context`` holding it, current during the call and
  handed to all four metric points (so each can carry an exemplar of the span). No
  instrumentation that records what spendmeter records can cost less with the stock SDK.

The time modes, and what the method cancels:

- **Interleaved rounds.** The instrumentors patch the same LiteLLM functions, so only one can
  be instrumented at a time. Each round visits every contender: instrument it, make a few
  untimed warm-up calls, collect garbage, time a block of calls, uninstrument. The order
  rotates by one each round, so over a multiple of five rounds (four for streams, which the
  floor leaves out) each contender takes each place in a round equally often. A contender's
  added time is the median of its per-round samples minus the median of bare's. A round takes
  seconds, so drift slower than that (frequency scaling, other jobs starting and stopping, a
  machine warming up) moves every contender's samples alike and cancels in the difference;
  measuring one contender after another, minutes apart, let it bias the ratios.
- **What it does not cancel.** Noise faster than a round (a burst from another process during
  one block) is only damped by the medians; the ``±`` columns, a standard error estimated from
  the interquartile range of the per-round differences to bare, show how much is left, and a
  target whose verdict lies within two of them is printed as undecided. A visit follows the same
  neighbour each round; its warm-up calls are what absorb the caches the neighbour leaves.
  LiteLLM runs a sync call's logging (and a stream's, a task per chunk) in a thread pool of
  its own, and an async call's in a worker task: every block waits for both inside its timed
  window, so that it pays for its own calls' logging and none spills into the next one.
- **Wall and CPU.** Every block is timed with both clocks: wall (``perf_counter``), what a
  caller waits, and CPU (``process_time``: every thread of the process, so LiteLLM's executor
  and logging threads and the exporters' too), which leaves out the time spent waiting for a
  CPU and so is the steadier on a shared machine.
- **Plain and async calls**: blocks of sequential ``completion`` / ``acompletion`` calls.
- **Throughput**: per visit, ``asyncio.gather`` of 1,000 ``acompletion`` tasks; calls/s from
  the wall time, CPU per call from the CPU time.
- **Per stream chunk**, isolated from LiteLLM's own work: a long stream (1,000 chunks: the
  mock streams three characters a chunk) and a short one (10 chunks), with
  ``stream_options={"include_usage": True}``. ``(long - short)`` cancels what a call costs
  once (its start and end); subtracting bare's ``(long - short)`` cancels LiteLLM's own work
  per chunk. Divided by the chunk difference, that is what an instrumentation adds per chunk.
  It cancels LiteLLM's work on average, not its noise: LiteLLM's mock spends orders of
  magnitude more per chunk than the 1 us target, so this figure is mostly noise.
- **Per chunk, replayed**: what decides the 1 us target. The chunks of a long and a short
  stream are recorded once from bare LiteLLM, then fed through spendmeter's own wrapper of
  ``completion`` in place of LiteLLM's stream (span, budgets, proxy, the read at the end,
  pricing, metrics: all of spendmeter's path), and through nothing (bare); and likewise, as
  an async stream, through its wrapper of ``acompletion``. Each round times all eight in a
  rotating order; per chunk is ``((spendmeter long - spendmeter short) -
  (bare long - bare short)) / extra chunks``. With LiteLLM's work gone, its noise is gone:
  what is left is spendmeter's per-chunk cost alone, its ``±`` a few nanoseconds.
- Garbage collection stays on and the exporters' threads run (5 s intervals), as in an app;
  a block pays for the collections its own allocations trigger.

The instruction mode (``--instructions``) runs this script again under ``valgrind
--tool=callgrind --instr-atstart=no`` with ``PYTHONHASHSEED=0``, and counts regions from inside
the process through a small C library (``benchmarks/region.c``, built into the gitignored
``benchmarks/build/``): per contender, instrument, warm up, collect garbage, zero the counters
and start counting, make the calls, stop and dump. Each count is split into parts, a region
each (N plain calls in 3 parts; 4 short streams in 2; 2 long streams, 300 chunks by default,
in 2; the replayed streams, sync and async, 4 short and 2 long, in 2 each), and the ``±`` is
the standard error over the parts. Instructions per call are the parts' mean total over their
calls; per chunk, the same subtractions as above. The floor's work is also counted in its two
parts, its span and its four metric points, N of each: how much of the floor the metric points
are.

- Callgrind counts every thread, so a region stops only once LiteLLM's logging thread pool
  has run every task its calls queued. So that background threads add no noise, this mode
  exports spans and metrics once an hour (flushed before each region): the counts hold
  everything done on the call path, queueing a span for export included, but not the export.
- A count does not drift with the machine, so this mode needs no interleaving. What is left
  is the interpreter's own variation from one identical region to the next (it stays with
  garbage collection off): about 0.2% of a region, some 10k instructions a plain call and a
  few thousand a chunk. More long streams narrow it; longer ones barely do.
- Instructions are not time (cache misses and allocations cost differently), but they barely
  move on a busy machine, which the time figures do. The dumps stay in
  ``benchmarks/results/callgrind/`` for ``callgrind_annotate``.

Pricing is compared on the same response: spendmeter reads LiteLLM's precomputed
``_hidden_params["response_cost"]`` (the per-call path) and, in a second figure, prices the
response with that figure removed by asking LiteLLM's calculator; ``litellm.completion_cost``
prices it from scratch. All run hot and must agree.

The memory run (``--memory``) makes 100,000 instrumented calls under tracemalloc and reports
what spendmeter and OpenTelemetry keep alive per call: it must be about zero.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import gc
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, wait
from contextlib import contextmanager
from contextvars import Token
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

# LiteLLM reads this at import: its price map from the installed package, never the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import litellm.main
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue
from wrapt import FunctionWrapper, wrap_function_wrapper

from spendmeter import BudgetSpanProcessor, LiteLLMInstrumentor
from spendmeter import semconv as sc
from spendmeter.budget import HISTORY_SIZE
from spendmeter.metrics import create_instruments
from spendmeter.pricing import Pricer

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "What does this call cost?"}]
ANSWER = "About a hundredth of a cent, give or take a token."
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "overhead.json"
REGION_SOURCE = HERE / "region.c"
BUILD = HERE / "build"  # gitignored
BARE = "bare"
FLOOR = "otel floor"
SPENDMETER = "spendmeter"
TRACELOOP = "traceloop"

T = TypeVar("T")
Call = Callable[[], Any]


# --- the pipeline every contender gets ---------------------------------------------------


class CountingSpanDropper(SpanExporter):
    """Counts the spans it is handed, keeps none."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class MetricDropper(MetricExporter):
    def __init__(self) -> None:
        super().__init__()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


@dataclass
class Pipeline:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    spans: CountingSpanDropper

    @classmethod
    def fresh(cls, *, quiet: bool = False) -> Pipeline:
        """``quiet``: export once an hour and never on a full batch, so that no exporter thread
        wakes inside a counted region (spans are flushed before each one)."""
        interval_ms = 3_600_000 if quiet else 5_000  # 5 s: the span processor's default
        queue, batch = (1 << 16, 1 << 16) if quiet else (2048, 512)
        spans = CountingSpanDropper()
        tracer_provider = TracerProvider()
        processor = BatchSpanProcessor(
            spans,
            max_queue_size=queue,
            schedule_delay_millis=interval_ms,
            max_export_batch_size=batch,
        )
        tracer_provider.add_span_processor(processor)
        reader = PeriodicExportingMetricReader(MetricDropper(), export_interval_millis=interval_ms)
        return cls(tracer_provider, MeterProvider(metric_readers=[reader]), spans)

    def exported_spans(self) -> int:
        self.tracer_provider.force_flush()
        return self.spans.spans

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


# --- contenders ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instrumentation:
    """Turns one contender on and off; it is turned on and off again every round."""

    on: Callable[[], None]
    off: Callable[[], None]
    # The floor's per-call work split in two (its span, its four points), each one call's
    # worth, counted apart under callgrind: what the SDK-decided targets are made of.
    parts: Mapping[str, Callable[[], None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Contender:
    name: str
    package: str | None
    # Readies the contender on its pipeline, once; instruments nothing yet.
    prepare: Callable[[Pipeline], Instrumentation]
    streams: bool = True  # whether its stream numbers mean anything


def _nothing() -> None:
    pass


def _bare(pipeline: Pipeline) -> Instrumentation:
    return Instrumentation(_nothing, _nothing)


def _spendmeter(pipeline: Pipeline) -> Instrumentation:
    provider = pipeline.tracer_provider
    instrumentor = LiteLLMInstrumentor()

    def on() -> None:
        # uninstrument() shuts the budget down for good (a budget governs one instrumentation),
        # so every round gets a fresh one, in the old one's place: adding one a round would leave
        # the dead ones on the provider, each still handed every span.
        _replace_budget(provider, BudgetSpanProcessor(1_000_000.0))
        instrumentor.instrument(tracer_provider=provider, meter_provider=pipeline.meter_provider)

    return Instrumentation(on, instrumentor.uninstrument)


def _replace_budget(provider: TracerProvider, budget: BudgetSpanProcessor) -> None:
    # The SDK has no public way to remove a span processor; spendmeter itself finds budgets in
    # this same private tuple.
    active = provider._active_span_processor
    with active._lock:
        kept = [p for p in active._span_processors if not isinstance(p, BudgetSpanProcessor)]
        active._span_processors = (*kept, budget)


def _openinference(pipeline: Pipeline) -> Instrumentation:
    from openinference.instrumentation.litellm import LiteLLMInstrumentor as Peer

    instrumentor = Peer()
    return Instrumentation(
        lambda: instrumentor.instrument(tracer_provider=pipeline.tracer_provider),
        instrumentor.uninstrument,
    )


def _traceloop(pipeline: Pipeline) -> Instrumentation:
    # The peer this benchmark compares with; spendmeter itself never imports it.
    from opentelemetry.instrumentation.litellm import LiteLLMInstrumentor as Peer

    instrumentor = Peer()
    return Instrumentation(
        lambda: instrumentor.instrument(
            tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider
        ),
        instrumentor.uninstrument,
    )


def _otel_floor(pipeline: Pipeline) -> Instrumentation:
    """Not a peer: what spendmeter asks of the OpenTelemetry SDK per plain call, and nothing
    else, with constant values: a CLIENT span with 4 start and 14 end attributes, one Context
    holding it, current during the call and given to all four metric points, so that each
    point can carry an exemplar linked to the span."""
    tracer = pipeline.tracer_provider.get_tracer("floor")
    instruments = create_instruments(pipeline.meter_provider.get_meter("floor"))
    base: dict[str, AttributeValue] = {
        sc.GEN_AI_OPERATION_NAME: sc.OPERATION_CHAT,
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: MODEL,
    }
    start: dict[str, AttributeValue] = {**base, sc.GEN_AI_REQUEST_STREAM: False}
    inputs: dict[str, AttributeValue] = {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT}
    outputs: dict[str, AttributeValue] = {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}
    end: dict[str, AttributeValue] = {
        sc.GEN_AI_RESPONSE_ID: "chatcmpl-0123456789",
        sc.GEN_AI_RESPONSE_MODEL: MODEL,
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 10,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20,
        sc.SPENDMETER_PRICING_STATUS: sc.PRICING_PRICED,
        sc.GEN_AI_USAGE_COST: 1.35e-05,
        sc.SPENDMETER_PRICING_SOURCE: sc.SOURCE_LITELLM,
        sc.SPENDMETER_PRICING_MODEL: MODEL,
        sc.SPENDMETER_COST_INPUT: 1.5e-06,
        sc.SPENDMETER_COST_OUTPUT: 1.2e-05,
        sc.SPENDMETER_COST_CACHE_READ: 0.0,
        sc.SPENDMETER_COST_CACHE_WRITE: 0.0,
        sc.SPENDMETER_COST_OTHER: 0.0,
    }

    def started() -> tuple[Span, Context, Token[Context]]:
        span = tracer.start_span("chat " + MODEL, kind=SpanKind.CLIENT, attributes=start)
        ctx = trace.set_span_in_context(span)
        return span, ctx, context.attach(ctx)

    def points(ctx: Context) -> None:
        instruments.duration.record(0.001, base, context=ctx)
        instruments.token_usage.record(10, inputs, context=ctx)
        instruments.token_usage.record(20, outputs, context=ctx)
        instruments.cost.add(1.35e-05, base, context=ctx)

    def finished(span: Span, ctx: Context, token: Token[Context]) -> None:
        context.detach(token)
        span.set_attributes(end)
        span.end()
        points(ctx)

    def span_part() -> None:
        span, _, token = started()
        context.detach(token)
        span.set_attributes(end)
        span.end()

    # The points' part holds a span made once, here: its exemplars link to it, as a call's do.
    held, held_context, held_token = started()
    finished(held, held_context, held_token)

    def points_part() -> None:
        points(held_context)

    def sync(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        span, ctx, token = started()
        try:
            return wrapped(*args, **kwargs)
        finally:
            finished(span, ctx, token)

    async def asynchronous(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        span, ctx, token = started()
        try:
            return await wrapped(*args, **kwargs)
        finally:
            finished(span, ctx, token)

    def on() -> None:
        wrap_function_wrapper(litellm, "completion", sync)
        wrap_function_wrapper(litellm, "acompletion", asynchronous)

    def off() -> None:
        unwrap(litellm, "completion")
        unwrap(litellm, "acompletion")

    return Instrumentation(on, off, {"span": span_part, "points": points_part})


CONTENDERS = (
    Contender(BARE, None, _bare),
    Contender(FLOOR, "opentelemetry-sdk", _otel_floor, streams=False),
    Contender(SPENDMETER, "spendmeter", _spendmeter),
    Contender("openinference", "openinference-instrumentation-litellm", _openinference),
    Contender(TRACELOOP, "opentelemetry-instrumentation-litellm", _traceloop),
)


def _patch_points() -> tuple[Any, ...]:
    """Every function some contender replaces to instrument a chat call."""
    found = [litellm.completion, litellm.acompletion]
    found += [litellm.main.completion, litellm.main.acompletion]
    # Newer LiteLLMs route litellm.completion through a dispatcher that calls these.
    dispatch = sys.modules.get("litellm.chat_completions.dispatch")
    for name in ("_PYTHON_COMPLETION", "_PYTHON_ACOMPLETION"):
        found.append(getattr(dispatch, name, None))
    return tuple(found)


ORIGINALS = _patch_points()


def _patched() -> bool:
    # Identity, not ==: a wrapt wrapper compares equal to the function it wraps.
    return any(now is not then for now, then in zip(_patch_points(), ORIGINALS, strict=True))


@dataclass
class Live:
    """A contender readied on its pipeline; ``error`` once it failed and is left out."""

    contender: Contender
    pipeline: Pipeline
    instrumentation: Instrumentation
    spans_per_call: int = 0
    error: str | None = None

    @property
    def name(self) -> str:
        return self.contender.name

    @contextmanager
    def instrumented(self) -> Iterator[None]:
        self.instrumentation.on()
        try:
            if self.name != BARE and not _patched():
                raise RuntimeError("instrument() patched none of LiteLLM's chat functions")
            yield
        finally:
            self.instrumentation.off()
            # A contender that left LiteLLM patched would make every later "bare" sample wrong.
            if _patched():
                raise RuntimeError(f"{self.name}: uninstrument() left LiteLLM patched")


def set_up(
    names: Sequence[str] | None, *, quiet: bool = False
) -> tuple[list[Live], dict[str, str]]:
    """Ready the chosen contenders (bare always), each on a pipeline of its own; check that each
    makes spans when on and leaves LiteLLM as it found it when off. Returns the ready ones and
    the errors of those that could not be readied."""
    LITELLM_LOGGING.track()
    lives: list[Live] = []
    errors: dict[str, str] = {}
    for contender in CONTENDERS:
        if names and contender.name != BARE and contender.name not in names:
            continue
        pipeline = Pipeline.fresh(quiet=quiet)
        try:
            live = Live(contender, pipeline, contender.prepare(pipeline))
            with live.instrumented():
                before = pipeline.exported_spans()
                plain_call()
                live.spans_per_call = pipeline.exported_spans() - before
            if contender.name != BARE and live.spans_per_call < 1:
                raise RuntimeError("instrumented, but made no span")
        except Exception as error:  # a peer missing, or broken on this LiteLLM
            if contender.name == BARE:
                raise
            errors[contender.name] = f"{type(error).__name__}: {error}"
            pipeline.shutdown()
            continue
        lives.append(live)
    return lives, errors


def tear_down(lives: Sequence[Live]) -> None:
    for live in lives:
        live.pipeline.shutdown()


# --- the calls -----------------------------------------------------------------------------


def plain_call() -> Any:
    # Looked up on the module each call: whichever contender is on right now.
    return litellm.completion(model=MODEL, messages=MESSAGES, mock_response=ANSWER)


async def async_call() -> Any:
    return await litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response=ANSWER)


def stream_text(chunks: int) -> str:
    """A mock answer LiteLLM streams in ``chunks`` text chunks: three characters a chunk, each
    different from the one before (LiteLLM ends a stream that repeats a chunk)."""
    return "".join(f"{index % 1000:03d}" for index in range(chunks))


STREAMED = {
    "model": MODEL,
    "messages": MESSAGES,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def consume(text: str) -> int:
    """Stream ``text`` to the end, with usage; returns the number of chunks."""
    stream = litellm.completion(**STREAMED, mock_response=text)
    return sum(1 for _chunk in stream)


# --- replayed streams: spendmeter's per-chunk work without LiteLLM's -----------------------


def recorded_chunks(text: str) -> list[Any]:
    """The chunks LiteLLM streams for ``text``, usage chunk included; recorded uninstrumented."""
    if _patched():
        raise RuntimeError("chunks must be recorded with LiteLLM uninstrumented")
    return list(litellm.completion(**STREAMED, mock_response=text))


def replay_bare(chunks: list[Any]) -> int:
    return sum(1 for _chunk in iter(chunks))


def replay_through_spendmeter(chunks: list[Any]) -> int:
    """The recorded chunks through spendmeter's own wrapper of ``completion``, as if LiteLLM had
    streamed them: a span started, budgets asked, the stream proxied, every chunk passed
    through, and at the end the chunks read, the call priced, metrics and budgets told. Only
    LiteLLM's own work per chunk is gone, which makes a chunk's share exact."""
    wrapper = _spendmeter_wrapper(is_async=False)

    def stream_again(*_args: Any, **_kwargs: Any) -> Any:
        return iter(chunks)

    return sum(1 for _chunk in wrapper(stream_again, None, (), dict(STREAMED)))


class AsyncReplay:
    """The recorded chunks as an async stream, as ``acompletion`` would return them."""

    def __init__(self, chunks: list[Any]) -> None:
        self._chunks = iter(chunks)

    def __aiter__(self) -> AsyncReplay:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None


def replay_async_bare(loop: asyncio.AbstractEventLoop, chunks: list[Any]) -> int:
    async def consume() -> int:
        return sum([1 async for _chunk in AsyncReplay(chunks)])

    return loop.run_until_complete(consume())


def replay_async_through_spendmeter(loop: asyncio.AbstractEventLoop, chunks: list[Any]) -> int:
    """``replay_through_spendmeter`` for ``acompletion``: its wrapper, an async stream."""
    wrapper = _spendmeter_wrapper(is_async=True)

    async def stream_again(*_args: Any, **_kwargs: Any) -> Any:
        return AsyncReplay(chunks)

    async def consume() -> int:
        stream = await wrapper(stream_again, None, (), dict(STREAMED))
        return sum([1 async for _chunk in stream])

    return loop.run_until_complete(consume())


Replay = Callable[[list[Any]], int]


def replays(loop: asyncio.AbstractEventLoop) -> dict[str, tuple[Replay, Replay]]:
    """For a sync and an async stream: how to replay chunks through spendmeter, and bare."""
    return {
        "sync": (replay_through_spendmeter, replay_bare),
        "async": (
            functools.partial(replay_async_through_spendmeter, loop),
            functools.partial(replay_async_bare, loop),
        ),
    }


def _spendmeter_wrapper(*, is_async: bool) -> Callable[..., Any]:
    """spendmeter's wrapper of the chat entry point it patched (``sync_call``, ``async_call``)."""
    for point in _patch_points():
        if not isinstance(point, FunctionWrapper):
            continue
        wrapper = point._self_wrapper
        ours = wrapper.__module__ == "spendmeter._wrappers"
        if ours and asyncio.iscoroutinefunction(wrapper) == is_async:
            return wrapper  # type: ignore[no-any-return]
    raise RuntimeError("spendmeter is not instrumented: no wrapper to replay through")


class LoggingTasks:
    """The tasks LiteLLM hands its logging thread pool: a sync call's success logging, and one
    per stream chunk. They run on other threads after the call has returned, but the call
    caused them, so every timed block and counted region waits for them: it pays for its own,
    and none spill into the next contender's. A fixed pause is not enough: under callgrind,
    which runs one thread at a time, a long stream's chunk tasks were still queued when its
    region stopped, and the per-chunk counts swung by hundreds of thousands of instructions."""

    def __init__(self) -> None:
        self._queued: list[Future[Any]] = []

    def track(self) -> None:
        """Note every task submitted from now on; once per process."""
        try:
            from litellm.litellm_core_utils.thread_pool_executor import executor
        except ImportError:  # a LiteLLM without the pool logs on threads of its own
            return
        if "submit" in vars(executor):
            return
        submit = executor.submit
        queued = self._queued

        def tracked(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            future: Future[Any] = submit(fn, *args, **kwargs)
            queued.append(future)
            return future

        executor.submit = tracked

    def wait(self) -> None:
        """Return once every task submitted so far, and every task those submitted, is done."""
        while self._queued:
            done = self._queued[:]
            del self._queued[: len(done)]
            wait(done)


LITELLM_LOGGING = LoggingTasks()


async def flush_litellm_logging() -> None:
    """Wait for LiteLLM's async logging worker, then its thread pool, to finish what the calls
    so far queued, so that a block pays for its own calls' logging and none spills into the
    next contender's."""
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:  # a LiteLLM without the worker logs inline
        pass
    else:
        flush = getattr(GLOBAL_LOGGING_WORKER, "flush", None)
        if flush is not None:
            await flush()
    LITELLM_LOGGING.wait()


# --- interleaving --------------------------------------------------------------------------


def interleave(lives: Sequence[Live], rounds: int, visit: Callable[[], T]) -> dict[str, list[T]]:
    """Samples of ``visit()`` per contender, one a round, with only that contender on. Each
    round visits every contender, starting one further along than the round before."""
    samples: dict[str, list[T]] = {live.name: [] for live in lives}
    for index in range(rounds):
        shift = index % len(lives)
        for live in (*lives[shift:], *lives[:shift]):
            if live.error is not None:
                continue
            try:
                with live.instrumented():
                    samples[live.name].append(visit())
            except Exception as error:  # a peer that fails on this LiteLLM: left out from now
                if live.name == BARE:
                    raise
                live.error = f"{type(error).__name__}: {error}"
    return {live.name: samples[live.name] for live in lives if live.error is None}


class Sample(NamedTuple):
    """Seconds per unit of work (a call, a chunk): wall clock, and CPU of the whole process
    (every thread: LiteLLM's executor and logging threads, the exporters)."""

    wall: float
    cpu: float


def _clocks() -> Sample:
    return Sample(time.perf_counter(), time.process_time())


def _per(start: Sample, units: int) -> Sample:
    now = _clocks()
    return Sample((now.wall - start.wall) / units, (now.cpu - start.cpu) / units)


def timed_block(calls: int, warmup: int) -> Sample:
    """Per plain call, over a block of ``calls``."""
    for _ in range(warmup):
        plain_call()
    LITELLM_LOGGING.wait()
    gc.collect()  # every block starts with no one else's garbage
    start = _clocks()
    for _ in range(calls):
        plain_call()
    LITELLM_LOGGING.wait()
    return _per(start, calls)


def timed_async_block(calls: int, warmup: int) -> Sample:
    """Per ``acompletion`` awaited one after the other, over a block of ``calls``."""

    async def run() -> Sample:
        for _ in range(warmup):
            await async_call()
        await flush_litellm_logging()
        gc.collect()
        start = _clocks()
        for _ in range(calls):
            await async_call()
        await flush_litellm_logging()
        return _per(start, calls)

    return asyncio.run(run())


def timed_burst(tasks: int, warmup: int) -> Sample:
    """Per call, of ``tasks`` concurrent ``acompletion`` calls and their logging."""

    async def run() -> Sample:
        await asyncio.gather(*(async_call() for _ in range(warmup)))
        await flush_litellm_logging()
        gc.collect()
        start = _clocks()
        await asyncio.gather(*(async_call() for _ in range(tasks)))
        await flush_litellm_logging()
        return _per(start, tasks)

    return asyncio.run(run())


@dataclass(frozen=True)
class StreamSample:
    long: Sample
    short: Sample  # the median of the visit's short streams
    long_chunks: int
    short_chunks: int

    @property
    def per_chunk(self) -> Sample:
        """Per chunk beyond the short stream's: what a call costs once cancels out."""
        extra = self.long_chunks - self.short_chunks
        return Sample(
            (self.long.wall - self.short.wall) / extra, (self.long.cpu - self.short.cpu) / extra
        )


def timed_streams(long_text: str, short_text: str, shorts: int, warmup: int) -> StreamSample:
    for _ in range(warmup):
        consume(short_text)
    LITELLM_LOGGING.wait()
    gc.collect()
    long, long_chunks = _timed_stream(long_text)
    short = [_timed_stream(short_text) for _ in range(shorts)]
    short_chunks = {chunks for _sample, chunks in short}
    if len(short_chunks) != 1:
        raise RuntimeError(f"short streams of different lengths: {short_chunks}")
    median = Sample(
        statistics.median(sample.wall for sample, _c in short),
        statistics.median(sample.cpu for sample, _c in short),
    )
    return StreamSample(long, median, long_chunks, short_chunks.pop())


def _timed_stream(text: str) -> tuple[Sample, int]:
    start = _clocks()
    chunks = consume(text)
    LITELLM_LOGGING.wait()
    return _per(start, 1), chunks


def measure_replay(lives: list[Live], args: argparse.Namespace) -> dict[str, Any]:
    """spendmeter's time per chunk on recorded chunks (see ``replay_through_spendmeter``), of a
    sync and of an async stream: each round times a long and a short stream replayed through
    spendmeter and bare, sync and async, in an order that rotates, and takes ``((traced long -
    traced short) - (bare long - bare short)) / extra chunks`` of each."""
    live = next(live for live in lives if live.name == SPENDMETER)
    long = recorded_chunks(stream_text(args.long_chunks))
    short = recorded_chunks(stream_text(args.short_chunks))
    loop = asyncio.new_event_loop()
    kinds = replays(loop)
    visits = [
        functools.partial(replay, chunks)
        for traced, bare in kinds.values()
        for replay, chunks in ((traced, long), (traced, short), (bare, long), (bare, short))
    ]
    extra = len(long) - len(short)
    try:
        with live.instrumented():
            for visit in visits * 5:
                visit()
            rounds = [_replay_round(visits, index, extra) for index in range(args.replay_rounds)]
    finally:
        loop.close()
    found: dict[str, Any] = {
        "long_chunks": len(long),
        "short_chunks": len(short),
        "rounds": args.replay_rounds,
    }
    for index, kind in enumerate(kinds):
        per_chunk = [samples[index] for samples in rounds]
        found[kind] = {
            "wall": _replay_row([sample.wall for sample in per_chunk]),
            "cpu": _replay_row([sample.cpu for sample in per_chunk]),
        }
    return found


def _replay_round(visits: list[Call], shift: int, extra: int) -> list[Sample]:
    """One round of ``measure_replay``, visits[shift] first: per extra chunk, one sample for
    each group of four visits (traced long and short, bare long and short)."""
    timed: dict[int, Sample] = {}
    for step in range(len(visits)):
        index = (shift + step) % len(visits)
        start = _clocks()
        visits[index]()
        timed[index] = _per(start, 1)
    found = []
    for first in range(0, len(visits), 4):
        traced_long, traced_short, bare_long, bare_short = (timed[first + i] for i in range(4))
        found.append(
            Sample(
                (traced_long.wall - traced_short.wall - bare_long.wall + bare_short.wall) / extra,
                (traced_long.cpu - traced_short.cpu - bare_long.cpu + bare_short.cpu) / extra,
            )
        )
    return found


def _replay_row(values: list[float]) -> dict[str, float]:
    return {
        "added": round(statistics.median(values) * 1e6, 4),
        "error": round(_median_error(values) * 1e6, 4),
    }


# --- summaries -----------------------------------------------------------------------------


def summarise(samples: dict[str, list[Sample]]) -> dict[str, Any]:
    return {
        "wall": compare({name: [s.wall for s in rows] for name, rows in samples.items()}),
        "cpu": compare({name: [s.cpu for s in rows] for name, rows in samples.items()}),
    }


def compare(samples: dict[str, list[float]], scale: float = 1e6) -> dict[str, dict[str, Any]]:
    """Per contender: median, added = median - bare's median, its ``error``, ratio to bare;
    ``scale`` turns seconds into microseconds."""
    bare = samples[BARE]
    bare_median = statistics.median(bare)
    found = {}
    for name, values in samples.items():
        median = statistics.median(values)
        paired = [value - base for value, base in zip(values, bare, strict=True)]  # same rounds
        found[name] = {
            "rounds": len(values),
            "median": round(median * scale, 3),
            "added": round((median - bare_median) * scale, 3),
            "error": round(_median_error(paired) * scale, 3),
            "ratio": round(median / bare_median, 4),
            "samples": [round(value * scale, 3) for value in values],
        }
    return found


def _median_error(values: Sequence[float]) -> float:
    """The standard error of a median, from the interquartile range (robust to the outliers a
    shared machine makes): 1.2533 sigma / sqrt(n), sigma = IQR / 1.349."""
    if len(values) < 2:
        return 0.0
    low, _median, high = statistics.quantiles(values, n=4)
    return 0.929 * (high - low) / math.sqrt(len(values))


def measure_time(lives: list[Live], args: argparse.Namespace) -> dict[str, Any]:
    def step(name: str) -> None:
        print(f"time: {name} ...", file=sys.stderr, flush=True)

    found: dict[str, Any] = {}
    step(f"plain calls, {args.rounds} rounds of {args.block}")
    visit = functools.partial(timed_block, args.block, args.warmup)
    found["plain"] = summarise(interleave(lives, args.rounds, visit))
    step(f"async calls, {args.rounds} rounds of {args.block}")
    visit = functools.partial(timed_async_block, args.block, args.warmup)
    found["async"] = summarise(interleave(lives, args.rounds, visit))
    step(f"throughput, {args.throughput_rounds} rounds of {args.tasks:,} tasks")
    found["throughput"] = measure_throughput(lives, args)
    step(f"streams, {args.stream_rounds} rounds of {args.long_chunks} and {args.short_chunks}")
    found["stream"] = measure_streams(lives, args)
    if any(live.name == SPENDMETER for live in lives):
        step(f"replayed streams, {args.replay_rounds} rounds")
        found["replay"] = measure_replay(lives, args)
    return found


def measure_throughput(lives: list[Live], args: argparse.Namespace) -> dict[str, Any]:
    visit = functools.partial(timed_burst, args.tasks, 20)
    found = summarise(interleave(lives, args.throughput_rounds, visit))
    for row in found["wall"].values():
        row["calls_per_s"] = round(1e6 / row["median"], 1)
    return {"tasks": args.tasks, **found}


def measure_streams(lives: list[Live], args: argparse.Namespace) -> dict[str, Any]:
    streaming = [live for live in lives if live.contender.streams]
    long_text, short_text = stream_text(args.long_chunks), stream_text(args.short_chunks)
    visit = functools.partial(timed_streams, long_text, short_text, 3, 2)
    samples = interleave(streaming, args.stream_rounds, visit)
    chunks = {(s.long_chunks, s.short_chunks) for rows in samples.values() for s in rows}
    if len(chunks) != 1:
        raise RuntimeError(f"contenders saw streams of different lengths: {chunks}")
    long_chunks, short_chunks = chunks.pop()
    per_chunk = {name: [s.per_chunk for s in rows] for name, rows in samples.items()}
    return {"long_chunks": long_chunks, "short_chunks": short_chunks, **summarise(per_chunk)}


# --- instruction counts (callgrind) --------------------------------------------------------


def count_instructions(args: argparse.Namespace) -> dict[str, Any]:
    """Run this script under callgrind (see the module docstring) and read its dumps."""
    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            return {"error": f"--instructions needs {tool} on PATH"}
    library = _build_region_library()
    out = RESULTS.parent / "callgrind"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}/cg.%p",
        f"--log-file={out}/valgrind.log",
        sys.executable,
        str(Path(__file__).resolve()),
        "--callgrind-child",
        str(out),
        "--region-library",
        str(library),
        "--instruction-calls",
        str(args.instruction_calls),
        "--instruction-long-chunks",
        str(args.instruction_long_chunks),
        "--short-chunks",
        str(args.short_chunks),
        *(["--only", *args.only] if args.only else []),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        return {"error": f"callgrind run failed ({done.returncode}); see {out}/valgrind.log"}
    meta = json.loads((out / "meta.json").read_text())
    found = summarise_instructions(read_dumps(out), meta)
    found["seconds"] = round(time.perf_counter() - started, 1)
    return found


def _build_region_library() -> Path:
    library = BUILD / "region.so"
    if not library.exists() or library.stat().st_mtime < REGION_SOURCE.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        command = ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(REGION_SOURCE)]
        subprocess.run(command, check=True)
    return library


# Each count is split into parts, one region each, so that their spread gives an error bar.
PARTS = {
    "plain": 3,
    "floor_span": 3,
    "floor_points": 3,
    "short": 2,
    "long": 2,
    "replay_long": 2,
    "replay_short": 2,
    "replay_async_long": 2,
    "replay_async_short": 2,
}
REPLAY_PARTS = {"sync": "replay", "async": "replay_async"}  # the parts' names begin so
STREAMS_PER_PART = {
    "short": 2,
    "long": 1,
    "replay_long": 2,
    "replay_short": 4,
    "replay_async_long": 2,
    "replay_async_short": 4,
}


class Region:
    """Counts instructions between start and stop, through benchmarks/region.c."""

    def __init__(self, path: str) -> None:
        self._lib = ctypes.CDLL(path)
        self._lib.region_stop.argtypes = [ctypes.c_char_p]
        if not self._lib.running_on_valgrind():
            raise SystemExit("--callgrind-child runs under valgrind only; use --instructions")

    def count_parts(self, kind: str, live: Live, call: Call, times: int, warmup: int) -> None:
        for _ in range(warmup):
            call()
        for part in range(PARTS[kind]):
            self.count(f"{kind}|{live.name}|{part}", call, times, live)

    def count(self, label: str, call: Call, times: int, live: Live) -> None:
        # Before counting: LiteLLM's logging done with the warm-up, the spans queued so far
        # exported (a quiet pipeline exports on nothing else), no garbage left.
        LITELLM_LOGGING.wait()
        live.pipeline.tracer_provider.force_flush()
        gc.collect()
        self._lib.region_start()
        try:
            for _ in range(times):
                call()
            LITELLM_LOGGING.wait()  # the logging these calls caused, counted with them
        finally:
            self._lib.region_stop(label.encode())


def callgrind_child(args: argparse.Namespace) -> int:
    """Inside valgrind: per contender, regions of plain calls, then of short and long streams.
    No need to interleave here: a count does not drift with the machine."""
    region = Region(args.region_library)
    lives, errors = set_up(args.only, quiet=True)
    long_text = stream_text(args.instruction_long_chunks)
    short_text = stream_text(args.short_chunks)
    # The same streams, recorded for the replays: their lengths are every stream's.
    replayed = {"long": recorded_chunks(long_text), "short": recorded_chunks(short_text)}
    chunks = {kind: len(found) for kind, found in replayed.items()}
    calls = max(args.instruction_calls // PARTS["plain"], 1)
    units = {"plain": calls, "floor_span": calls, "floor_points": calls, **STREAMS_PER_PART}
    for live in lives:
        print(f"callgrind: {live.name} ...", file=sys.stderr, flush=True)
        try:
            with live.instrumented():
                region.count_parts("plain", live, plain_call, calls, 30)
                for part, work in live.instrumentation.parts.items():
                    region.count_parts(f"floor_{part}", live, work, calls, 30)
                if live.contender.streams:
                    consume(long_text)  # warms what only a long stream reaches; not counted
                    short = functools.partial(consume, short_text)
                    region.count_parts("short", live, short, units["short"], 3)
                    long = functools.partial(consume, long_text)
                    region.count_parts("long", live, long, units["long"], 0)
                if live.name == SPENDMETER:
                    count_replays(region, lives, live, replayed)
        except Exception as error:  # a peer that fails on this LiteLLM
            errors[live.name] = f"{type(error).__name__}: {error}"
    meta = {
        "units_per_part": units,
        "chunks": chunks,
        "order": [live.name for live in lives if live.name not in errors],
        "errors": errors,
    }
    (Path(args.callgrind_child) / "meta.json").write_text(json.dumps(meta, indent=2))
    tear_down(lives)
    return 0


def count_replays(
    region: Region, lives: Sequence[Live], live: Live, replayed: dict[str, list[Any]]
) -> None:
    """The recorded streams, sync and async, through spendmeter (on now) and bare; bare's
    regions are counted here too, as iterating a list needs nothing uninstrumented."""
    bare = next(found for found in lives if found.name == BARE)
    loop = asyncio.new_event_loop()
    try:
        for kind, (traced, untraced) in replays(loop).items():
            for length, chunks in replayed.items():
                part = f"{REPLAY_PARTS[kind]}_{length}"
                for who, replay in ((live, traced), (bare, untraced)):
                    call = functools.partial(replay, chunks)
                    region.count_parts(part, who, call, STREAMS_PER_PART[part], 3)
    finally:
        loop.close()


def read_dumps(directory: Path) -> dict[str, int]:
    """Instructions per region label. A dump's ``summary:`` line reads 0 when instrumentation
    started late; its ``totals:`` line holds the count."""
    counts = {}
    for path in directory.glob("cg.*"):
        text = path.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: Client Request: (.+)$", text, re.MULTILINE)
        total = re.search(r"^totals: (\d+)", text, re.MULTILINE)
        if label and total:
            counts[label.group(1)] = int(total.group(1))
    return counts


@dataclass(frozen=True)
class Estimate:
    """A mean over a count's parts, and its standard error."""

    mean: float
    error: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Estimate:
        error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), error)

    def __sub__(self, other: Estimate) -> Estimate:
        return Estimate(self.mean - other.mean, math.hypot(self.error, other.error))

    def __truediv__(self, by: float) -> Estimate:
        return Estimate(self.mean / by, self.error / by)


def summarise_instructions(counts: dict[str, int], meta: dict[str, Any]) -> dict[str, Any]:
    units = meta["units_per_part"]

    def per_unit(kind: str, name: str) -> Estimate | None:
        found = [
            counts[f"{kind}|{name}|{part}"] / units[kind]
            for part in range(PARTS[kind])
            if f"{kind}|{name}|{part}" in counts
        ]
        return Estimate.of(found) if len(found) == PARTS[kind] else None

    extra_chunks = meta["chunks"]["long"] - meta["chunks"]["short"]
    plain: dict[str, Estimate] = {}
    chunk: dict[str, Estimate] = {}
    for name in meta["order"]:
        calls, long, short = (per_unit(kind, name) for kind in ("plain", "long", "short"))
        if calls is not None:
            plain[name] = calls
        if long is not None and short is not None:
            chunk[name] = (long - short) / extra_chunks
    replayed: dict[str, dict[str, Estimate]] = {part: {} for part in REPLAY_PARTS.values()}
    for replay, found in replayed.items():
        for name in (BARE, SPENDMETER):
            long, short = per_unit(f"{replay}_long", name), per_unit(f"{replay}_short", name)
            if long is not None and short is not None:
                found[name] = (long - short) / extra_chunks
    floor = {
        part: round(found.mean)
        for part in ("span", "points")
        if (found := per_unit(f"floor_{part}", FLOOR)) is not None
    }
    return {
        "calls": units["plain"] * PARTS["plain"],
        "chunks": meta["chunks"],
        "errors": meta["errors"],
        "plain": _instruction_rows(plain, "per_call"),
        "floor_parts": floor,
        "per_chunk": _instruction_rows(chunk, "per_chunk"),
        "replayed_per_chunk": _instruction_rows(replayed[REPLAY_PARTS["sync"]], "per_chunk"),
        "replayed_async_per_chunk": _instruction_rows(replayed[REPLAY_PARTS["async"]], "per_chunk"),
    }


def _instruction_rows(found: dict[str, Estimate], key: str) -> dict[str, dict[str, int | None]]:
    bare = found.get(BARE)
    rows = {}
    for name, value in found.items():
        added = value - bare if bare is not None else None
        rows[name] = {
            key: round(value.mean),
            "added": None if added is None else round(added.mean),
            "noise": None if added is None else round(added.error),
        }
    return rows


# --- pricing -------------------------------------------------------------------------------


def measure_pricing(repeat: int) -> dict[str, Any]:
    """spendmeter's pricing of a finished call against ``litellm.completion_cost``.

    ``spendmeter_us``: the per-call path, a response that carries LiteLLM's own figure (read,
    never recomputed); ``spendmeter_with_usage_us``: a response whose figure was removed, which
    spendmeter hands to LiteLLM's calculator with the call's context. Both must equal
    ``completion_cost``.
    """
    response = litellm.completion(model=MODEL, messages=MESSAGES, mock_response=ANSWER)
    provider = response._hidden_params.get("custom_llm_provider")
    pricer = Pricer()
    bare = response.model_copy()
    bare._hidden_params = {k: v for k, v in response._hidden_params.items() if k != "response_cost"}

    def ours() -> float:
        total = pricer.price("completion", MODEL, provider, {}, response, 0.0).total
        return math.nan if total is None else total

    def ours_with_usage() -> float:
        total = pricer.price("completion", MODEL, provider, {}, bare, 0.0).total
        return math.nan if total is None else total

    def litellms() -> float:
        return float(litellm.completion_cost(completion_response=bare))

    ours_us = _best_median_us(ours, repeat)
    with_usage_us = _best_median_us(ours_with_usage, max(repeat // 20, 50))
    litellm_us = _best_median_us(litellms, max(repeat // 20, 50))
    pricer.close()
    return {
        "spendmeter_usd": ours(),
        "litellm_usd": litellms(),
        "equal": math.isclose(ours(), litellms(), rel_tol=1e-12)
        and math.isclose(ours_with_usage(), litellms(), rel_tol=1e-12),
        "spendmeter_us": round(ours_us, 3),
        "spendmeter_with_usage_us": round(with_usage_us, 3),
        "litellm_completion_cost_us": round(litellm_us, 3),
        "speedup": round(litellm_us / ours_us, 1),
        "speedup_with_usage": round(litellm_us / with_usage_us, 1),
    }


def _best_median_us(function: Call, repeat: int) -> float:
    for _ in range(repeat // 10):
        function()
    clock = time.perf_counter
    batch = 20
    samples = []
    for _ in range(repeat // batch):
        start = clock()
        for _ in range(batch):
            function()
        samples.append((clock() - start) / batch)
    return statistics.median(samples) * 1e6


# --- memory --------------------------------------------------------------------------------


def measure_memory(calls: int) -> dict[str, Any]:
    """Memory that ``calls`` instrumented calls keep alive, traced with tracemalloc.

    Tracing starts after a warm-up, and growth is counted from the first tenth of the calls
    on: by then every bounded buffer (the budget's history of its last HISTORY_SIZE calls, the
    batch processor's queue) has been refilled with traced objects, so what still grows is
    what the calls leave behind. Spans waiting in the batch processor are flushed before each
    reading.
    """
    pipeline = Pipeline.fresh()
    instrumentation = _spendmeter(pipeline)
    instrumentation.on()
    models = ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5")

    def call(index: int) -> None:
        litellm.completion(
            model=models[index % len(models)],
            messages=MESSAGES,
            mock_response=ANSWER,
            user=f"user-{index}",  # distinct per call: must not grow any state
        )

    def settle() -> None:
        LITELLM_LOGGING.wait()
        pipeline.tracer_provider.force_flush()
        gc.collect()

    step = max(calls // 10, 2 * HISTORY_SIZE)
    try:
        for index in range(step):
            call(index)
        settle()
        tracemalloc.start()
        checkpoints = []
        for index in range(calls):
            call(step + index)
            if (index + 1) % step == 0:
                settle()
                checkpoints.append(
                    {"calls": index + 1, "bytes": tracemalloc.get_traced_memory()[0]}
                )
                if len(checkpoints) == 1:
                    baseline = tracemalloc.take_snapshot()
        settle()
        final = tracemalloc.take_snapshot()
        tracemalloc.stop()
    finally:
        instrumentation.off()
        pipeline.shutdown()
    counted = calls - checkpoints[0]["calls"]
    growth = _growth_by_package(baseline, final)
    ours = growth["spendmeter"] + growth["opentelemetry"]
    return {
        "calls": calls,
        "warmup_calls": step,
        "traced_bytes": checkpoints,
        "growth_bytes_by_package": growth,
        "growth_counted_over_calls": counted,
        "bytes_kept_per_call_by_spendmeter_and_opentelemetry": round(ours / counted, 3),
    }


PACKAGES = ("spendmeter", "opentelemetry", "litellm")


def _growth_by_package(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> dict[str, int]:
    """Bytes allocated between the snapshots and still alive, by the package that made them."""
    growth = dict.fromkeys((*PACKAGES, "other"), 0)
    for stat in after.compare_to(before, "filename"):
        filename = stat.traceback[0].filename.replace(os.sep, "/")
        package = next((name for name in PACKAGES if f"/{name}/" in filename), "other")
        growth[package] += stat.size_diff
    return growth


# --- targets -------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    limit: float
    value: float | None = None  # None: not measured in this run
    noise: float | None = None  # the value's standard error, roughly
    why_not: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        return None if self.value is None else self.value <= self.limit

    @property
    def within_noise(self) -> bool:
        """Whether the verdict could flip within two standard errors: read it as undecided.
        One was too narrow: a per-chunk time of -52 ± 49 us, all noise, read as met."""
        if self.value is None or self.noise is None:
            return False
        return abs(self.value - self.limit) < 2 * self.noise

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.name,
            "value": None if self.value is None else round(self.value, 4),
            "limit": self.limit,
            "met": self.met,
            "noise": None if self.noise is None else round(self.noise, 4),
            "within_noise": self.within_noise,
            "why_not": self.why_not or None,
            **self.details,
        }


def _get(tree: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def targets(results: dict[str, Any]) -> list[Target]:
    return [
        *_instruction_targets(results),
        _throughput_target(results),
        _chunk_target(results),
        _async_chunk_target(results),
        _memory_target(results),
        *_pricing_targets(results),
    ]


def _instruction_targets(results: dict[str, Any]) -> list[Target]:
    plain = _get(results, "instructions", "plain") or {}
    ours, floor, peer = plain.get(SPENDMETER), plain.get(FLOOR), plain.get(TRACELOOP)
    over_floor = Target("added instructions per plain call - (floor's added + 60k)", 0)
    over_peer = Target("added instructions per plain call / Traceloop's added", 0.85)
    if ours is None:
        for target in (over_floor, over_peer):
            target.why_not = "run with --instructions"
        return [over_floor, over_peer]
    if floor is None:
        over_floor.why_not = "the floor was not counted"
    else:
        over_floor.value = ours["added"] - (floor["added"] + 60_000)
        over_floor.noise = math.hypot(ours["noise"], floor["noise"])
        over_floor.details = {"spendmeter_added": ours["added"], "floor_added": floor["added"]}
    if peer is None or peer["added"] <= 0:
        over_peer.why_not = "Traceloop was not counted, or added nothing"
    else:
        _set_ratio(over_peer, ours, peer)
        over_peer.details = {"spendmeter_added": ours["added"], "traceloop_added": peer["added"]}
    return [over_floor, over_peer]


def _set_ratio(target: Target, ours: dict[str, Any], peer: dict[str, Any]) -> None:
    """ours' added / peer's added, with the ratio's error bar to first order."""
    ratio = ours["added"] / peer["added"]
    target.value = ratio
    target.noise = math.hypot(ours["noise"], ratio * peer["noise"]) / peer["added"]


def _throughput_target(results: dict[str, Any]) -> Target:
    tasks = _get(results, "time", "throughput", "tasks") or 1000
    target = Target(f"added CPU per call, {tasks:,} concurrent tasks / Traceloop's added", 0.85)
    cpu = _get(results, "time", "throughput", "cpu") or {}
    ours, peer = cpu.get(SPENDMETER), cpu.get(TRACELOOP)
    if ours is None or peer is None:
        target.why_not = "the throughput row did not run for both"
    elif peer["added"] <= 0:
        target.why_not = f"Traceloop's added CPU is {peer['added']} us: within the noise, no ratio"
    else:
        _set_ratio(target, {**ours, "noise": ours["error"]}, {**peer, "noise": peer["error"]})
        target.details = {"spendmeter_added_us": ours["added"], "traceloop_added_us": peer["added"]}
    return target


def _chunk_target(results: dict[str, Any]) -> Target:
    """Decided on replayed streams: through LiteLLM, a chunk's microsecond is lost in LiteLLM's
    milliseconds of its own. CPU rather than wall: it leaves out the time spent waiting for a
    CPU, the largest noise on a shared machine."""
    target = _replayed_chunk_target(results, "sync", "replayed_per_chunk")
    through_litellm = _get(results, "time", "stream", "cpu", SPENDMETER)
    if through_litellm is not None:
        target.details["us_through_litellm"] = through_litellm["added"]
        target.details["us_through_litellm_noise"] = through_litellm["error"]
    return target


def _async_chunk_target(results: dict[str, Any]) -> Target:
    """The same target for a chunk of an ``acompletion`` stream, replayed."""
    return _replayed_chunk_target(results, "async", "replayed_async_per_chunk")


def _replayed_chunk_target(results: dict[str, Any], kind: str, counts: str) -> Target:
    target = Target(f"added CPU us per {kind} stream chunk (replayed chunks)", 1.0)
    replayed = _get(results, "time", "replay", kind)
    if replayed is None:
        target.why_not = "the replayed streams did not run (time modes, spendmeter)"
    else:
        target.value, target.noise = replayed["cpu"]["added"], replayed["cpu"]["error"]
        target.details["wall_us"] = replayed["wall"]["added"]
    counted = _get(results, "instructions", counts, SPENDMETER)
    if counted is not None:
        target.details["instructions_added_per_chunk"] = counted["added"]
        target.details["instructions_noise"] = counted["noise"]
    return target


def _memory_target(results: dict[str, Any]) -> Target:
    target = Target("bytes kept per call by spendmeter + opentelemetry", 1.0)
    kept = _get(results, "memory", "bytes_kept_per_call_by_spendmeter_and_opentelemetry")
    if kept is None:
        target.why_not = "run with --memory"
    else:
        target.value = kept
    return target


def _pricing_targets(results: dict[str, Any]) -> list[Target]:
    pricing = results.get("pricing")
    speed = Target("pricing: completion_cost time / spendmeter's", round(1 / 20, 3))
    equal = Target("pricing differs from completion_cost (0: equal)", 0)
    if pricing is None:
        speed.why_not = equal.why_not = "pricing did not run"
    else:
        speed.value = 1 / pricing["speedup"]
        equal.value = 0 if pricing["equal"] else 1
    return [speed, equal]


# --- report --------------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    print(f"\nlitellm {results['litellm']}, Python {results['python']}, {results['machine']}")
    for name, error in results["errors"].items():
        print(f"not run: {name}: {error}")
    timed = results.get("time")
    if timed:
        _print_time(timed)
    if "instructions" in results:
        _print_instructions(results["instructions"])
    pricing = results.get("pricing")
    if pricing:
        print(
            f"\npricing a finished call: litellm.completion_cost "
            f"{pricing['litellm_completion_cost_us']:.1f} us; spendmeter reading LiteLLM's "
            f"figure {pricing['spendmeter_us']:.2f} us ({pricing['speedup']:.1f}x faster), "
            f"{pricing['spendmeter_with_usage_us']:.2f} us asking LiteLLM when there is none "
            f"({pricing['speedup_with_usage']:.1f}x); equal: {pricing['equal']}"
        )
    if "memory" in results:
        memory = results["memory"]
        print(
            f"\nmemory: traced bytes every {memory['warmup_calls']:,} of {memory['calls']:,} "
            f"calls: {[point['bytes'] for point in memory['traced_bytes']]}; growth over the "
            f"last {memory['growth_counted_over_calls']:,} calls by package: "
            f"{memory['growth_bytes_by_package']}"
        )
    print("\ntargets (spendmeter):")
    for target in results["targets"]:
        _print_target(target)


def _print_target(target: dict[str, Any]) -> None:
    verdict = {True: "met   ", False: "MISSED", None: "n/a   "}[target["met"]]
    shown = target["why_not"] if target["value"] is None else target["value"]
    noise = "" if target["noise"] is None else f" ± {target['noise']}"
    undecided = ", within the noise: undecided" if target["within_noise"] else ""
    print(f"  {verdict} {target['target']}: {shown}{noise} (limit {target['limit']}{undecided})")
    if "instructions_added_per_chunk" in target:
        print(
            f"         replayed, instructions: {target['instructions_added_per_chunk']:+,} "
            f"± {target['instructions_noise']:,} a chunk"
        )
    if "us_through_litellm" in target:
        print(
            f"         through LiteLLM's stream: {target['us_through_litellm']} "
            f"± {target['us_through_litellm_noise']} us a chunk (LiteLLM's noise)"
        )


def _print_time(timed: dict[str, Any]) -> None:
    print(
        "\ntime in us, median over rounds; added: median - bare's median; "
        "±: its standard error, from the per-round differences to bare"
    )
    header = (
        f"{'row':<24}{'contender':<15}{'wall':>10}{'added':>9}{'±':>9}"
        f"{'CPU':>10}{'added':>9}{'±':>9}{'calls/s':>9}"
    )
    print(header)
    print("-" * len(header))
    stream = timed["stream"]
    rows = [
        ("plain call", timed["plain"]),
        ("async call", timed["async"]),
        (f"{timed['throughput']['tasks']:,} tasks, per call", timed["throughput"]),
        (f"chunk ({stream['long_chunks']}-{stream['short_chunks']})", stream),
    ]
    for label, found in rows:
        for name, wall in found["wall"].items():
            cpu = found["cpu"][name]
            calls = f"{wall['calls_per_s']:.0f}" if "calls_per_s" in wall else ""
            print(f"{label:<24}{name:<15}{_cells(name, wall)}{_cells(name, cpu)}{calls:>9}")
    replay = timed.get("replay")
    for kind in ("sync", "async") if replay is not None else ():
        label = f"{kind} chunk, replayed"
        wall, cpu = replay[kind]["wall"], replay[kind]["cpu"]
        print(
            f"{label:<24}{SPENDMETER:<15}{'':>10}{wall['added']:>9.2f}{wall['error']:>9.2f}"
            f"{'':>10}{cpu['added']:>9.2f}{cpu['error']:>9.2f}"
        )


def _cells(name: str, row: dict[str, Any]) -> str:
    if name == BARE:
        return f"{row['median']:>10.1f}{'':>18}"
    return f"{row['median']:>10.1f}{row['added']:>9.1f}{row['error']:>9.1f}"


def _print_instructions(found: dict[str, Any]) -> None:
    if "error" in found:
        print(f"\ninstructions: not counted: {found['error']}")
        return
    chunks = found["chunks"]
    print(
        f"\ninstructions (callgrind, {found['seconds']:.0f} s): {found['calls']} plain calls and "
        f"streams of {chunks['long']} and {chunks['short']} chunks a contender; "
        "±: standard error over the count's parts"
    )
    header = f"{'contender':<15}{'per call':>12}{'added':>10}{'±':>8}"
    print(header + f"{'per chunk':>12}{'added':>10}{'±':>8}")
    for name, row in found["plain"].items():
        chunk = found["per_chunk"].get(name)
        cells = _count_cells(name, row["per_call"], row)
        if chunk is not None:
            cells += _count_cells(name, chunk["per_chunk"], chunk)
        print(f"{name:<15}{cells}")
    for kind, key in (("", "replayed_per_chunk"), ("async ", "replayed_async_per_chunk")):
        replayed = found[key]
        if SPENDMETER in replayed:
            ours = replayed[SPENDMETER]
            print(
                f"replayed {kind}chunks ({chunks['long']}-{chunks['short']}): bare "
                f"{replayed[BARE]['per_chunk']:,} a chunk, spendmeter {ours['added']:+,} "
                f"± {ours['noise']:,}"
            )
    floor = found["floor_parts"]
    if floor:  # whichever parts were counted: a part that failed is in the errors below
        counted = ", ".join(f"{part} {count:,}" for part, count in floor.items())
        print(f"the floor's parts, instructions a call: {counted}")
    for name, error in found["errors"].items():
        print(f"not counted: {name}: {error}")


def _count_cells(name: str, count: int, row: dict[str, Any]) -> str:
    if name == BARE or row["added"] is None:
        return f"{count:>12,}{'':>18}"
    return f"{count:>12,}{row['added']:>10,}{row['noise']:>8,}"


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--rounds", type=int, default=40, help="interleaved rounds, plain and async calls")
    add("--block", type=int, default=20, help="timed calls per contender and round")
    add("--warmup", type=int, default=5, help="untimed calls before each block")
    add("--throughput-rounds", type=int, default=5, help="interleaved rounds of the burst")
    add("--tasks", type=int, default=1000, help="concurrent acompletion tasks in a burst")
    add("--stream-rounds", type=int, default=8, help="interleaved rounds of the streams")
    add("--long-chunks", type=int, default=1000, help="text chunks of the long stream")
    add("--short-chunks", type=int, default=10, help="text chunks of the short stream")
    add("--replay-rounds", type=int, default=400, help="rounds of the replayed streams")
    add("--no-time", action="store_true", help="skip the time modes")
    add("--instructions", action="store_true", help="also count instructions with callgrind")
    add("--instruction-calls", type=int, default=60, help="plain calls counted per contender")
    add("--instruction-long-chunks", type=int, default=300, help="long stream, callgrind mode")
    add("--memory", action="store_true", help="also run the tracemalloc check")
    add("--memory-calls", type=int, default=100_000)
    add("--only", nargs="*", help="contenders to run besides bare (default: all)")
    add("--out", type=Path, default=RESULTS, help="where to write the JSON")
    add("--callgrind-child", help=argparse.SUPPRESS)  # the run inside valgrind: dumps here
    add("--region-library", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.callgrind_child:
        return callgrind_child(args)
    results: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "litellm": _version("litellm"),
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("callgrind_child", "region_library")
        },
    }
    lives, errors = set_up(args.only)
    results["contenders"] = {
        live.name: {
            "version": _version(live.contender.package),
            "spans_per_call": live.spans_per_call,
        }
        for live in lives
    }
    try:
        if not args.no_time:
            results["time"] = measure_time(lives, args)
    finally:
        tear_down(lives)
    errors |= {live.name: live.error for live in lives if live.error is not None}
    results["errors"] = errors
    if args.instructions:
        print("instructions: under callgrind ...", file=sys.stderr, flush=True)
        results["instructions"] = count_instructions(args)
    if not args.no_time:
        results["pricing"] = measure_pricing(repeat=20_000)
    if args.memory:
        print(f"memory: {args.memory_calls:,} calls ...", file=sys.stderr, flush=True)
        results["memory"] = measure_memory(args.memory_calls)
    results["targets"] = [target.as_json() for target in targets(results)]
    print_report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


def _version(distribution: str | None) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    if distribution is None:
        return None
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
