"""The demo app (examples/demo.py) for tests/test_ops_prometheus.py: run twice under
``opentelemetry-instrument`` and kept alive, so Prometheus can scrape the OpenTelemetry
Prometheus exporter between the rounds and after them.

Beside spendmeter, it records the same calls again as another GenAI instrumentation would (a
provider-SDK one that does not step aside): same-named ``gen_ai.client.*`` metrics from another
instrumentation scope, which the dashboards and alert rules must not count.

Protocol, one line each way:
  stdout  ``ops_app {json}`` after each round: every LLM span so far, as the test needs it
  stdin   a line asks for the second round; end of input ends the process
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spendmeter import semconv as sc

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
REPORT_PREFIX = "ops_app "
OTHER_SCOPE = "another.genai.instrumentation"


def call_record(span: ReadableSpan) -> dict[str, Any]:
    attributes = span.attributes or {}
    return {
        "model": attributes[sc.GEN_AI_REQUEST_MODEL],
        "provider": attributes[sc.GEN_AI_PROVIDER_NAME],
        "pricing": attributes.get(sc.SPENDMETER_PRICING_STATUS),
        "cost": attributes.get(sc.GEN_AI_USAGE_COST),
        "input_tokens": attributes.get(sc.GEN_AI_USAGE_INPUT_TOKENS),
        "output_tokens": attributes.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS),
        "error": attributes.get(sc.ERROR_TYPE),
    }


def report(spans: InMemorySpanExporter) -> list[dict[str, Any]]:
    calls = [
        call_record(span)
        for span in spans.get_finished_spans()
        if sc.GEN_AI_OPERATION_NAME in (span.attributes or {})
    ]
    print(REPORT_PREFIX + json.dumps({"calls": calls}), flush=True)
    return calls


class AnotherInstrumentation:
    """Records each call again under another scope, with the same metric names and labels."""

    def __init__(self) -> None:
        meter = metrics.get_meter(OTHER_SCOPE)
        self.duration = meter.create_histogram(sc.METRIC_OPERATION_DURATION, unit="s")
        self.tokens = meter.create_histogram(sc.METRIC_TOKEN_USAGE, unit="{token}")
        self.cost = meter.create_counter(sc.METRIC_COST, unit="USD")
        self.recorded = 0

    def record(self, calls: list[dict[str, Any]]) -> None:
        for call in calls[self.recorded :]:
            labels = {
                sc.GEN_AI_REQUEST_MODEL: call["model"],
                sc.GEN_AI_PROVIDER_NAME: call["provider"],
            }
            self.duration.record(0.5, labels)
            for kind in ("input", "output"):
                tokens = call[f"{kind}_tokens"]
                if tokens is not None:
                    self.tokens.record(tokens, {**labels, sc.GEN_AI_TOKEN_TYPE: kind})
            if call["cost"] is not None:
                self.cost.add(call["cost"], labels)
        self.recorded = len(calls)


def main() -> None:
    # opentelemetry-instrument has set an SDK tracer provider; the spans are the app's own
    # account of what it spent, to hold the Prometheus numbers against.
    spans = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))
    other = AnotherInstrumentation()
    demo = runpy.run_path(str(DEMO), run_name="spendmeter_demo")
    demo["main"]()
    other.record(report(spans))
    sys.stdin.readline()
    demo["main"]()
    other.record(report(spans))
    sys.stdin.read()  # until the test closes stdin: the exporter serves only while we live


if __name__ == "__main__":
    main()
