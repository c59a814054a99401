"""What the suppression signals add to a call: ``python benchmarks/context.py``.

Each LiteLLM call makes its span current with one context attach; spendmeter folds into that
same context the signals that other GenAI instrumentations honour (README, "Beside other
instrumentations"). This times attach + detach of that context against the span alone, in
alternating rounds so that machine drift hits both, and prints the medians per call.
"""

from __future__ import annotations

import statistics
import timeit

from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider

from spendmeter import _neighbours

CALLS = 100_000
ROUNDS = 15


def main() -> None:
    span = TracerProvider().get_tracer("bench").start_span("chat m")
    signals = _neighbours.suppression_signals()

    def span_only() -> None:
        context.detach(context.attach(trace.set_span_in_context(span)))

    def with_signals() -> None:
        context.detach(context.attach(_neighbours.call_context(span, signals)))

    times: dict[str, list[float]] = {"span only": [], "span + signals": []}
    for _ in range(ROUNDS):
        times["span only"].append(timeit.timeit(span_only, number=CALLS) / CALLS)
        times["span + signals"].append(timeit.timeit(with_signals, number=CALLS) / CALLS)
    medians = {name: statistics.median(values) * 1e9 for name, values in times.items()}
    print(f"signals: {', '.join(signals)}")
    for name, median in medians.items():
        print(f"{name:15s} {median:6.0f} ns per call (median of {ROUNDS} x {CALLS:,})")
    print(f"{'added':15s} {medians['span + signals'] - medians['span only']:6.0f} ns per call")


if __name__ == "__main__":
    main()
