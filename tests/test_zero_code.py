"""The demo app under `opentelemetry-instrument`, as a user runs it: no code changes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._support import run_demo

# Real servers or subprocesses: the `integration` set (`make check` leaves it out).
pytestmark = pytest.mark.integration


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON documents the console exporters print, one after another."""
    decoder = json.JSONDecoder()
    found, index = [], 0
    while (start := text.find("{", index)) != -1:
        try:
            document, index = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        found.append(document)
    return found


def printed_llm_spans(output: str) -> list[dict[str, Any]]:
    """The LLM spans the console exporter printed."""
    return [
        doc for doc in json_objects(output) if "gen_ai.operation.name" in doc.get("attributes", {})
    ]


def test_demo_prints_priced_spans(demo_run: subprocess.CompletedProcess[str]) -> None:
    result = demo_run

    assert result.returncode == 0, result.stdout
    spans = printed_llm_spans(result.stdout)
    assert len(spans) == 8
    statuses = [span["attributes"]["spendmeter.pricing.status"] for span in spans]
    assert statuses.count("unpriced") == 1
    assert statuses.count("estimated") == 1
    for span in spans:
        attributes = span["attributes"]
        assert span["kind"] == "SpanKind.CLIENT"
        if attributes["spendmeter.pricing.status"] == "unpriced":
            assert "gen_ai.usage.cost" not in attributes
        else:
            assert attributes["gen_ai.usage.cost"] > 0
    names = {span["name"] for span in spans}
    assert {
        "chat gpt-4o-mini",
        "chat claude-haiku-4-5",
        "embeddings text-embedding-3-small",
    } <= names


def test_summary_at_exit_agrees_with_spans_and_counters_and_comes_last(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    output = demo_run.stdout

    assert demo_run.returncode == 0, output
    span_total = sum(
        span["attributes"].get("gen_ai.usage.cost", 0.0) for span in printed_llm_spans(output)
    )
    counter_total = sum(
        point["value"]
        for doc in json_objects(output)
        for resource in doc.get("resource_metrics", ())
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
        if metric["name"] == "gen_ai.client.cost"
        for point in metric["data"]["data_points"]
    )
    assert counter_total == pytest.approx(span_total, rel=1e-9)

    assert output.count("LLM SPEND SUMMARY") == 1
    # Printed once the spans are flushed: the last thing the user sees, not scrolled away.
    assert output.rindex('"gen_ai.operation.name"') < output.index("LLM SPEND SUMMARY")
    printed = re.search(r"Total cost:\s+\$([0-9.]+)", output)
    assert printed is not None, output
    assert float(printed.group(1)) == pytest.approx(round(span_total, 6), abs=1e-9)
    assert re.search(r"Total requests:\s+8\b", output)
    assert re.search(r"Unpriced calls:\s+1\b", output)


def test_disabled_instrumentation_makes_no_spans() -> None:
    result = run_demo(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="spendmeter")

    assert result.returncode == 0, result.stderr
    assert printed_llm_spans(result.stdout) == []


def test_bad_pricing_file_is_reported_at_start_up_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-prices.yaml"
    result = run_demo(SPENDMETER_PRICING_FILE=str(missing))

    # A telemetry misconfiguration must not take the app down: it runs, untraced, and the
    # problem is one line, no traceback.
    assert result.returncode == 0
    line = f"spendmeter is off: SPENDMETER_PRICING_FILE: pricing file '{missing}': file not found"
    assert result.stderr.count(line) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert printed_llm_spans(result.stdout) == []


PROBE = """
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor


class ProbeInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ()

    def _instrument(self, **kwargs):
        print("probe instrumented", flush=True)

    def _uninstrument(self, **kwargs):
        pass
"""
# What sitecustomize does under opentelemetry-instrument, with the probe's distribution last
# on sys.path, so that OpenTelemetry's loader reaches it after spendmeter.
AUTO_INSTRUMENT = """
import sys

sys.path.append(sys.argv[1])
from opentelemetry.instrumentation.auto_instrumentation import initialize

initialize()
from spendmeter import LiteLLMInstrumentor

print("spendmeter instrumented:", LiteLLMInstrumentor().is_instrumented_by_opentelemetry)
print("litellm imported:", "litellm" in sys.modules)
"""


def probe_distribution(where: Path) -> Path:
    """A distribution that registers one more instrumentation, which says when it loads."""
    (where / "spendmeter_probe.py").write_text(PROBE)
    dist_info = where / "spendmeter_probe-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: spendmeter-probe\n")
    (dist_info / "entry_points.txt").write_text(
        "[opentelemetry_instrumentor]\nprobe = spendmeter_probe:ProbeInstrumentor\n"
    )
    return where


@pytest.mark.integration
def test_a_bad_variable_is_one_line_and_every_other_instrumentation_loads(
    tmp_path: Path,
) -> None:
    environment = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "SPENDMETER_BUDGET_WINDOW": "week",
    }
    result = subprocess.run(
        [sys.executable, "-c", AUTO_INSTRUMENT, str(probe_distribution(tmp_path))],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "spendmeter is off: SPENDMETER_BUDGET_WINDOW='week' is not valid: "
        "expected none or hour or day or month"
    ]
    assert "probe instrumented" in result.stdout
    assert "spendmeter instrumented: False" in result.stdout
    assert "litellm imported: False" in result.stdout  # nothing was patched
