"""Side-by-side overhead of LiteLLM instrumentations, on a mocked ``litellm.completion``.

Run it with one command from the repository root::

    bash benchmarks/run.sh            # builds benchmarks/.venv with '.[bench]', then runs this
    bash benchmarks/run.sh --memory   # adds the 100,000-call tracemalloc run

or, in any environment where ``pip install -e '.[bench]'`` was run, ``python
benchmarks/overhead.py``. It prints a table and writes it as JSON to
``benchmarks/results/overhead.json`` (``--out`` picks another path).

Contenders, each on the same pipeline: a fresh ``TracerProvider`` whose
``BatchSpanProcessor`` feeds an exporter that counts and drops spans, and a fresh
``MeterProvider`` whose ``PeriodicExportingMetricReader`` feeds an exporter that drops
metrics. Each one runs with its defaults, as a user who installs it gets it:

- **spendmeter**, everything on: spans with tokens and cost, the five instruments, pricing,
  and a ``BudgetSpanProcessor`` (a budget never reached, so it counts every call);
- **OpenInference** (``openinference-instrumentation-litellm``): spans with prompts and
  completions (its default), no metrics;
- **Traceloop** (``opentelemetry-instrumentation-litellm``): spans with prompts and
  completions (its default) and its metrics;
- and, as a yardstick rather than a contender, the **OpenTelemetry floor**: what spendmeter
  asks of the SDK on each call and nothing else (a current CLIENT span with the same 17
  attributes, the same four metric points), with constant values. No instrumentation that
  records what spendmeter records can cost less than this with the stock SDK.

What is fair, and how this script keeps it so:

- Instrumentors patch the same LiteLLM functions, so only one is instrumented at a time:
  instrument, measure, uninstrument, then the next.
- Machine drift (frequency scaling, other processes, a warm or cold cache) hits every
  contender: each instrumented call is paired with a bare call, made through the
  original function captured before anything was instrumented, in alternating order
  (bare first, then instrumented first), so drift cancels within a pair. A contender's
  overhead is the median of its instrumented calls minus the median of its bare calls,
  measured in the same minutes. (Alternating matters: a bare call that always came second
  would pay for the CPU caches the instrumented call had just cooled, and every overhead
  would read lower than it is.)
- Medians, not means: a garbage collection or a background export thread landing in one
  call moves the mean, not the median. Garbage collection stays on and background
  threads run, as they do in an app; nothing is deferred or turned off for the run.
- Streams are timed in three parts: the call that returns the stream (start), each chunk
  (``next()``), and the ``next()`` that ends the stream (end: this is where every
  contender finishes its span).
- Pricing is compared on the same response: spendmeter reads LiteLLM's precomputed
  ``_hidden_params["response_cost"]`` (the per-call path) and, in a second figure, prices the
  response with that figure removed by asking LiteLLM's calculator;
  ``litellm.completion_cost`` prices it from scratch. All run hot and must agree.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# LiteLLM reads this at import: its price map from the installed package, never the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from opentelemetry import context, trace
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
from opentelemetry.trace import SpanKind
from wrapt import wrap_function_wrapper

from spendmeter import BudgetSpanProcessor, LiteLLMInstrumentor
from spendmeter import semconv as sc
from spendmeter.budget import HISTORY_SIZE
from spendmeter.metrics import create_instruments
from spendmeter.pricing import Pricer

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "What does this call cost?"}]
ANSWER = "About a hundredth of a cent, give or take a token."
# LiteLLM's mock streams three characters a chunk: 20 text chunks, then the usage chunk.
STREAM_ANSWER = "Streams are billed by the token, too. " + "x" * 22
RESULTS = Path(__file__).parent / "results" / "overhead.json"

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
    def fresh(cls) -> Pipeline:
        spans = CountingSpanDropper()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(spans))
        reader = PeriodicExportingMetricReader(MetricDropper(), export_interval_millis=5_000)
        return cls(tracer_provider, MeterProvider(metric_readers=[reader]), spans)

    def exported_spans(self) -> int:
        self.tracer_provider.force_flush()
        return self.spans.spans

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


# --- contenders ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    name: str
    package: str
    # Instruments LiteLLM on the pipeline; returns what undoes it.
    instrument: Callable[[Pipeline], Callable[[], None]]
    streams: bool = True  # whether its stream numbers mean anything


def _spendmeter(pipeline: Pipeline) -> Callable[[], None]:
    pipeline.tracer_provider.add_span_processor(BudgetSpanProcessor(1_000_000.0))
    instrumentor = LiteLLMInstrumentor()
    instrumentor.instrument(
        tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider
    )
    return instrumentor.uninstrument


def _openinference(pipeline: Pipeline) -> Callable[[], None]:
    from openinference.instrumentation.litellm import LiteLLMInstrumentor as Peer

    instrumentor = Peer()
    instrumentor.instrument(tracer_provider=pipeline.tracer_provider)
    return instrumentor.uninstrument


def _traceloop(pipeline: Pipeline) -> Callable[[], None]:
    # The peer this benchmark compares with; spendmeter itself never imports it.
    from opentelemetry.instrumentation.litellm import LiteLLMInstrumentor as Peer

    instrumentor = Peer()
    instrumentor.instrument(
        tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider
    )
    return instrumentor.uninstrument


def _otel_floor(pipeline: Pipeline) -> Callable[[], None]:
    """Not a peer: what spendmeter asks of the OpenTelemetry SDK on each call, and nothing
    else, with constant values: a CLIENT span with the same 17 attributes, current during
    the call, and the same four metric points on the same instruments."""
    tracer = pipeline.tracer_provider.get_tracer("floor")
    instruments = create_instruments(pipeline.meter_provider.get_meter("floor"))
    base = {
        sc.GEN_AI_OPERATION_NAME: sc.OPERATION_CHAT,
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: MODEL,
    }
    start = {**base, sc.GEN_AI_REQUEST_STREAM: False}
    inputs = {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT}
    outputs = {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}
    end = {
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
    }

    def started() -> tuple[Any, Any]:
        span = tracer.start_span("chat " + MODEL, kind=SpanKind.CLIENT, attributes=start)
        return span, context.attach(trace.set_span_in_context(span))

    def finished(span: Any, token: Any) -> None:
        context.detach(token)
        span.set_attributes(end)
        span.end()
        instruments.duration.record(0.001, base)
        instruments.token_usage.record(10, inputs)
        instruments.token_usage.record(20, outputs)
        instruments.cost.add(1.35e-05, base)

    def sync(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        span, token = started()
        try:
            return wrapped(*args, **kwargs)
        finally:
            finished(span, token)

    async def asynchronous(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        span, token = started()
        try:
            return await wrapped(*args, **kwargs)
        finally:
            finished(span, token)

    wrap_function_wrapper(litellm, "completion", sync)
    wrap_function_wrapper(litellm, "acompletion", asynchronous)

    def undo() -> None:
        unwrap(litellm, "completion")
        unwrap(litellm, "acompletion")

    return undo


CONTENDERS = (
    Contender("otel floor", "opentelemetry-sdk", _otel_floor, streams=False),
    Contender("spendmeter", "spendmeter", _spendmeter),
    Contender("openinference", "openinference-instrumentation-litellm", _openinference),
    Contender("traceloop", "opentelemetry-instrumentation-litellm", _traceloop),
)


# --- the calls -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Functions:
    completion: Callable[..., Any]
    acompletion: Callable[..., Any]

    @classmethod
    def current(cls) -> Functions:
        return cls(litellm.completion, litellm.acompletion)


def plain(functions: Functions) -> Call:
    completion = functions.completion
    return lambda: completion(model=MODEL, messages=MESSAGES, mock_response=ANSWER)


def streamed(functions: Functions) -> Call:
    completion = functions.completion
    return lambda: completion(
        model=MODEL,
        messages=MESSAGES,
        mock_response=STREAM_ANSWER,
        stream=True,
        stream_options={"include_usage": True},
    )


# --- measuring -----------------------------------------------------------------------------


def _pairs(rounds: int) -> Iterator[tuple[int, int]]:
    """Which of (bare, instrumented) goes first in each round: they alternate."""
    for index in range(rounds):
        yield (0, 1) if index % 2 == 0 else (1, 0)


def measure_calls(bare: Call, instrumented: Call, rounds: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        bare()
        instrumented()
    calls = (bare, instrumented)
    samples: tuple[list[float], list[float]] = ([], [])
    clock = time.perf_counter
    for order in _pairs(rounds):
        for which in order:
            call = calls[which]
            start = clock()
            call()
            samples[which].append(clock() - start)
    return _compare(*samples)


def measure_async_calls(
    bare: Functions, instrumented: Functions, rounds: int, warmup: int
) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        calls = (bare.acompletion, instrumented.acompletion)
        for _ in range(warmup):
            for call in calls:
                await call(model=MODEL, messages=MESSAGES, mock_response=ANSWER)
        samples: tuple[list[float], list[float]] = ([], [])
        clock = time.perf_counter
        for order in _pairs(rounds):
            for which in order:
                call = calls[which]
                start = clock()
                await call(model=MODEL, messages=MESSAGES, mock_response=ANSWER)
                samples[which].append(clock() - start)
        return _compare(*samples)

    return asyncio.run(run())


@dataclass
class StreamSamples:
    start: list[float]
    chunks: list[float]
    end: list[float]

    def add(self, open_stream: Call) -> None:
        clock = time.perf_counter
        begin = clock()
        stream = open_stream()
        self.start.append(clock() - begin)
        while True:
            begin = clock()
            try:
                next(stream)
            except StopIteration:
                self.end.append(clock() - begin)
                return
            self.chunks.append(clock() - begin)


def measure_streams(bare: Call, instrumented: Call, rounds: int, warmup: int) -> dict[str, Any]:
    samples = (StreamSamples([], [], []), StreamSamples([], [], []))
    calls = (bare, instrumented)
    for _ in range(warmup):
        for call in calls:
            for _chunk in call():
                pass
    for order in _pairs(rounds):
        for which in order:
            samples[which].add(calls[which])
    chunks_per_stream = len(samples[0].chunks) / rounds
    return {
        "chunks_per_stream": chunks_per_stream,
        "start": _compare(samples[0].start, samples[1].start),
        "chunk": _compare(samples[0].chunks, samples[1].chunks),
        "end": _compare(samples[0].end, samples[1].end),
    }


def _compare(bare: list[float], instrumented: list[float]) -> dict[str, Any]:
    bare_us = statistics.median(bare) * 1e6
    instrumented_us = statistics.median(instrumented) * 1e6
    return {
        "samples": len(bare),
        "bare_us": round(bare_us, 2),
        "instrumented_us": round(instrumented_us, 2),
        "added_us": round(instrumented_us - bare_us, 2),
        "ratio": round(instrumented_us / bare_us, 4),
    }


def run_contender(
    contender: Contender, originals: Functions, rounds: int, stream_rounds: int
) -> dict[str, Any]:
    pipeline = Pipeline.fresh()
    try:
        undo = contender.instrument(pipeline)
    except Exception as error:  # a peer that cannot be installed or instrumented
        pipeline.shutdown()
        return {"error": f"{type(error).__name__}: {error}"}
    try:
        patched = Functions.current()
        if patched.completion is originals.completion:
            return {"error": "instrument() left litellm.completion unpatched"}
        warmup = max(rounds // 10, 20)
        results: dict[str, Any] = {}
        before = pipeline.exported_spans()
        patched.completion(model=MODEL, messages=MESSAGES, mock_response=ANSWER)
        results["spans_per_call"] = pipeline.exported_spans() - before
        results["plain"] = measure_calls(plain(originals), plain(patched), rounds, warmup)
        results["async"] = measure_async_calls(originals, patched, rounds, warmup)
        if contender.streams:
            results["stream"] = measure_streams(
                streamed(originals), streamed(patched), stream_rounds, max(stream_rounds // 10, 10)
            )
        return results
    except Exception as error:  # a peer that fails on this LiteLLM version
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        undo()
        pipeline.shutdown()
        gc.collect()


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
        return litellm.completion_cost(completion_response=bare)

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
    undo = _spendmeter(pipeline)
    models = ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5")

    def call(index: int) -> None:
        litellm.completion(
            model=models[index % len(models)],
            messages=MESSAGES,
            mock_response=ANSWER,
            user=f"user-{index}",  # distinct per call: must not grow any state
        )

    def settle() -> None:
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
        undo()
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


# --- report --------------------------------------------------------------------------------


def _faster_peer_added_us(results: dict[str, Any]) -> float | None:
    peers = [
        result["plain"]["added_us"]
        for name, result in results["contenders"].items()
        if name not in ("spendmeter", "otel floor") and "plain" in result
    ]
    return min(peers) if peers else None


def floor_yardstick(results: dict[str, Any]) -> dict[str, Any] | None:
    """The plain-call figures of the OpenTelemetry floor, read against the same targets:
    what no instrumentation recording what spendmeter records can go below."""
    floor = results["contenders"].get("otel floor", {}).get("plain")
    peer = _faster_peer_added_us(results)
    if floor is None or peer is None:
        return None
    return {
        "added_us": floor["added_us"],
        "added_over_faster_peer": round(floor["added_us"] / peer, 3),
        "ratio_to_bare": floor["ratio"],
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    ours = results["contenders"].get("spendmeter", {})
    peer = _faster_peer_added_us(results)
    found = []
    if "plain" in ours:
        added = ours["plain"]["added_us"]
        if peer is not None:
            found.append(_target("added per plain call / faster peer's", added / peer, 0.5, 1 / 3))
        found.append(_target("plain call ratio to bare", ours["plain"]["ratio"], 1.15, 1.10))
        found.append(
            _target("stream overhead per chunk (us)", ours["stream"]["chunk"]["added_us"], 2.0)
        )
    pricing = results["pricing"]
    found.append(_target("pricing: completion_cost time / ours", 1 / pricing["speedup"], 1 / 20))
    if "memory" in results:
        kept = results["memory"]["bytes_kept_per_call_by_spendmeter_and_opentelemetry"]
        found.append(_target("memory kept per call (bytes)", kept, 1.0))
    found.append({"target": "pricing equals completion_cost", "value": pricing["equal"],
                  "met": pricing["equal"]})  # fmt: skip
    return found


def _target(name: str, value: float, limit: float, aim: float | None = None) -> dict[str, Any]:
    return {
        "target": name,
        "value": round(value, 3),
        "limit": round(limit, 3),
        "aim": None if aim is None else round(aim, 3),
        "met": value <= limit,
    }


def print_report(results: dict[str, Any]) -> None:
    print(f"\nbare mocked call: litellm {results['litellm']}, Python {results['python']}")
    header = f"{'mode':<14}{'contender':<15}{'bare us':>10}{'instr. us':>11}{'added us':>10}"
    print(header + f"{'ratio':>8}")
    print("-" * (len(header) + 8))
    for name, result in results["contenders"].items():
        if "error" in result:
            print(f"{'-':<14}{name:<15}not run: {result['error']}")
            continue
        rows = [("plain", result["plain"]), ("async", result["async"])]
        for part in ("start", "chunk", "end") if "stream" in result else ():
            rows.append((f"stream {part}", result["stream"][part]))
        for mode, row in rows:
            print(
                f"{mode:<14}{name:<15}{row['bare_us']:>10.1f}{row['instrumented_us']:>11.1f}"
                f"{row['added_us']:>10.1f}{row['ratio']:>8.3f}"
            )
    pricing = results["pricing"]
    print(
        f"\npricing a finished call: litellm.completion_cost "
        f"{pricing['litellm_completion_cost_us']:.1f} us; spendmeter reading LiteLLM's figure "
        f"{pricing['spendmeter_us']:.2f} us ({pricing['speedup']:.0f}x faster), "
        f"{pricing['spendmeter_with_usage_us']:.2f} us asking LiteLLM when there is none "
        f"({pricing['speedup_with_usage']:.0f}x); equal: {pricing['equal']}"
    )
    if "memory" in results:
        memory = results["memory"]
        print(
            f"memory: traced bytes every {memory['warmup_calls']:,} of {memory['calls']:,} calls: "
            f"{[point['bytes'] for point in memory['traced_bytes']]}; growth over the last "
            f"{memory['growth_counted_over_calls']:,} calls by package: "
            f"{memory['growth_bytes_by_package']}"
        )
    print("\ntargets:")
    for target in results["targets"]:
        aim = f", aim {target['aim']}" if target.get("aim") is not None else ""
        limit = f" (limit {target['limit']}{aim})" if "limit" in target else ""
        verdict = "met   " if target["met"] else "MISSED"
        print(f"  {verdict} {target['target']}: {target['value']}{limit}")
    floor = results.get("floor")
    if floor is not None:
        print(
            f"\nthe OpenTelemetry floor alone, for reference: +{floor['added_us']:.1f} us a plain "
            f"call, {floor['added_over_faster_peer']} of the faster peer's added time, "
            f"{floor['ratio_to_bare']} of a bare call"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5000, help="call pairs per mode")
    parser.add_argument("--stream-rounds", type=int, default=1000, help="stream pairs")
    parser.add_argument("--only", nargs="*", help="contender names to run (default: all)")
    parser.add_argument("--memory", action="store_true", help="also run the tracemalloc check")
    parser.add_argument("--memory-calls", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)

    originals = Functions.current()
    results: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "litellm": _version("litellm"),
        "spendmeter": _version("spendmeter"),
        "rounds": args.rounds,
        "stream_rounds": args.stream_rounds,
        "contenders": {},
    }
    for contender in CONTENDERS:
        if args.only and contender.name not in args.only:
            continue
        print(f"measuring {contender.name} ...", file=sys.stderr, flush=True)
        result = run_contender(contender, originals, args.rounds, args.stream_rounds)
        result["version"] = _version(contender.package)
        results["contenders"][contender.name] = result
    results["pricing"] = measure_pricing(repeat=20_000)
    if args.memory:
        print(f"memory: {args.memory_calls:,} calls ...", file=sys.stderr, flush=True)
        results["memory"] = measure_memory(args.memory_calls)
    results["targets"] = targets(results)
    results["floor"] = floor_yardstick(results)
    print_report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
