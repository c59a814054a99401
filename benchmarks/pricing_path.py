"""Time spendmeter adds to a mocked call, for the two paths pricing changes: a plain
``litellm.completion`` and a stream without usage (counted and priced when it ends).

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python benchmarks/pricing_path.py [--calls N]

Each instrumented call is paired with a bare one (the original function, captured before
instrumenting), alternating which goes first; the overhead is the median of the instrumented
calls minus the median of the bare ones. Only the public API is used, so the same script
measures any revision (put its ``src`` first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spendmeter import LiteLLMInstrumentor

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "What does this call cost?"}]
ANSWER = "About a hundredth of a cent, give or take a token."


def plain(completion: Callable[..., Any]) -> None:
    completion(model=MODEL, messages=MESSAGES, mock_response=ANSWER)


def stream_without_usage(completion: Callable[..., Any]) -> None:
    for _ in completion(model=MODEL, messages=MESSAGES, mock_response=ANSWER, stream=True):
        pass


def overhead_us(call: Callable[[Callable[..., Any]], None], bare: Any, calls: int) -> float:
    timed: dict[bool, list[float]] = {False: [], True: []}
    for index in range(calls):
        for instrumented in (False, True) if index % 2 else (True, False):
            function = litellm.completion if instrumented else bare
            started = time.perf_counter()
            call(function)
            timed[instrumented].append(time.perf_counter() - started)
    return (statistics.median(timed[True]) - statistics.median(timed[False])) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    calls = parser.parse_args().calls
    bare = litellm.completion
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    LiteLLMInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    for call in (plain, stream_without_usage):
        for _ in range(20):  # warm caches, imports and LiteLLM's lazy setup
            call(litellm.completion)
            call(bare)
        exporter.clear()
        print(f"{call.__name__}: +{overhead_us(call, bare, calls):.0f} us per call (median)")
        exporter.clear()


if __name__ == "__main__":
    main()
