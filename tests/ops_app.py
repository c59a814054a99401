"""The demo app (examples/demo.py) for tests/test_ops_prometheus.py: run twice under
``opentelemetry-instrument`` and kept alive, so Prometheus can scrape the OpenTelemetry
Prometheus exporter between the rounds and after them.

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

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spendmeter import semconv as sc

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
REPORT_PREFIX = "ops_app "


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


def report(spans: InMemorySpanExporter) -> None:
    calls = [
        call_record(span)
        for span in spans.get_finished_spans()
        if sc.GEN_AI_OPERATION_NAME in (span.attributes or {})
    ]
    print(REPORT_PREFIX + json.dumps({"calls": calls}), flush=True)


def main() -> None:
    # opentelemetry-instrument has set an SDK tracer provider; the spans are the app's own
    # account of what it spent, to hold the Prometheus numbers against.
    spans = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))
    demo = runpy.run_path(str(DEMO), run_name="spendmeter_demo")
    demo["main"]()
    report(spans)
    sys.stdin.readline()
    demo["main"]()
    report(spans)
    sys.stdin.read()  # until the test closes stdin: the exporter serves only while we live


if __name__ == "__main__":
    main()
