"""The exit spend summary, read from real SDK metrics recorded as the instrumentor records them."""

from __future__ import annotations

import io
import logging
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from spendmeter import SpendSummaryReader, _lifecycle
from spendmeter import semconv as sc
from spendmeter.metrics import Instruments, create_instruments
from spendmeter.summary import (
    EMPTY_SUMMARY,
    BudgetSpend,
    ModelSpend,
    SpendTotals,
    render_summary,
    spend_totals,
)
from tests._support import Telemetry, run_instrumented


def record_call(
    instruments: Instruments,
    model: str,
    provider: str,
    *,
    operation: str = sc.OPERATION_CHAT,
    cost: float | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    error_type: str | None = None,
) -> None:
    """Record one LLM call the way the instrumentor does (DESIGN.md section 3)."""
    attributes = {
        sc.GEN_AI_REQUEST_MODEL: model,
        sc.GEN_AI_PROVIDER_NAME: provider,
        sc.GEN_AI_OPERATION_NAME: operation,
    }
    if error_type is not None:
        instruments.duration.record(0.2, {**attributes, sc.ERROR_TYPE: error_type})
        return
    instruments.duration.record(0.7, attributes)
    for token_type, tokens in (
        (sc.TOKEN_TYPE_INPUT, input_tokens),
        (sc.TOKEN_TYPE_OUTPUT, output_tokens),
    ):
        if tokens is not None:
            instruments.token_usage.record(tokens, {**attributes, sc.GEN_AI_TOKEN_TYPE: token_type})
    if cost is None:
        instruments.unpriced_calls.add(
            1, {sc.GEN_AI_REQUEST_MODEL: model, sc.GEN_AI_PROVIDER_NAME: provider}
        )
    else:
        instruments.cost.add(cost, attributes)


def observe_budgets(meter: Meter, budgets: dict[str, tuple[float, float]]) -> None:
    """Budget gauges as the budget processor reports them: name -> (spent, limit)."""

    def observations(index: int) -> object:
        def callback(options: CallbackOptions) -> Iterator[Observation]:
            for name, values in budgets.items():
                yield Observation(values[index], {sc.SPENDMETER_BUDGET_NAME: name})

        return callback

    meter.create_observable_gauge(sc.METRIC_BUDGET_SPENT, [observations(0)], unit="USD")
    meter.create_observable_gauge(sc.METRIC_BUDGET_LIMIT, [observations(1)], unit="USD")


@dataclass
class Run:
    telemetry: Telemetry
    reader: SpendSummaryReader
    out: io.StringIO
    meter: Meter
    instruments: Instruments

    @property
    def provider(self) -> MeterProvider:
        return self.telemetry.meter_provider


@pytest.fixture
def run() -> Run:
    """A summary reader beside the in-memory one; each test shuts the provider down itself,
    when the summary is to print."""
    out = io.StringIO()
    reader = SpendSummaryReader(out=out)
    telemetry = Telemetry.build(readers=[reader], shutdown_on_exit=False)
    meter = telemetry.meter_provider.get_meter("spendmeter")
    return Run(telemetry, reader, out, meter, create_instruments(meter))


def record_mixed_run(run: Run) -> None:
    """Several models, providers and operations, a failed call and two unpriced calls."""
    mini = "gpt-4o-mini"
    inst = run.instruments
    record_call(inst, mini, "openai", cost=0.000105, input_tokens=10, output_tokens=150)
    record_call(inst, mini, "openai", cost=0.000150, input_tokens=12, output_tokens=200)
    record_call(inst, mini, "openai", error_type="RateLimitError")
    record_call(inst, mini, "azure.ai.openai", cost=0.000054, input_tokens=9, output_tokens=80)
    record_call(
        inst, "claude-3-5-haiku", "anthropic", cost=0.00165, input_tokens=10, output_tokens=58
    )
    record_call(
        inst,
        "text-embedding-3-small",
        "openai",
        operation=sc.OPERATION_EMBEDDINGS,
        cost=0.00004,
        input_tokens=2000,
    )
    record_call(inst, "my-local-model", "ollama", input_tokens=5, output_tokens=20)
    record_call(inst, "my-local-model", "ollama", input_tokens=7, output_tokens=30)


# total 0.000309 + 0.00165 + 0.00004 = 0.001999; requests 4 + 1 + 1 + 2 = 8
MIXED_RUN_SUMMARY = """\
=============================================================
LLM SPEND SUMMARY
=============================================================
Total cost:     $0.001999
Total requests: 8
Unpriced calls: 2 (cost unknown, not counted above)
Budget:         $0.0100 (OK)   Remaining: $0.008001
-------------------------------------------------------------
Model                  Requests   Input    Output   Cost
claude-3-5-haiku              1      10        58   $0.001650
gpt-4o-mini                   4      31       430   $0.000309
text-embedding-3-small        1    2000         0   $0.000040
my-local-model                2      12        50   unpriced
=============================================================
"""


def test_prints_the_summary_table_at_shutdown(run: Run) -> None:
    record_mixed_run(run)
    observe_budgets(run.meter, {"default": (0.001999, 0.01)})

    assert run.out.getvalue() == ""
    run.provider.shutdown()

    assert run.out.getvalue() == MIXED_RUN_SUMMARY


def test_spend_totals_reads_the_sdk_metrics_data(run: Run) -> None:
    record_mixed_run(run)

    totals = spend_totals(run.telemetry.reader.get_metrics_data())

    by_model = {model.model: model for model in totals.models}
    assert set(by_model) == {
        "gpt-4o-mini",
        "claude-3-5-haiku",
        "text-embedding-3-small",
        "my-local-model",
    }
    mini = by_model["gpt-4o-mini"]
    assert (mini.requests, mini.input_tokens, mini.output_tokens) == (4, 31, 430)
    assert mini.cost == pytest.approx(0.000309, abs=1e-12)
    local = by_model["my-local-model"]
    assert (local.requests, local.cost, local.unpriced_calls) == (2, None, 2)
    assert totals.total_requests == 8
    assert totals.total_cost == pytest.approx(0.001999, abs=1e-12)
    assert totals.unpriced_calls == 2
    assert totals.budgets == ()


def test_several_budgets_get_one_named_line_each(run: Run) -> None:
    record_call(run.instruments, "gpt-4o-mini", "openai", cost=0.0125)
    observe_budgets(run.meter, {"team-a": (0.0125, 0.01), "team-b": (0.0025, 0.05)})

    run.provider.shutdown()

    lines = run.out.getvalue().splitlines()
    assert "Budget team-a:  $0.0100 (EXCEEDED)   Over by: $0.002500" in lines
    assert "Budget team-b:  $0.0500 (OK)   Remaining: $0.047500" in lines


def test_force_flush_before_shutdown_loses_nothing(run: Run) -> None:
    record_call(run.instruments, "gpt-4o-mini", "openai", cost=0.001)
    run.provider.force_flush()
    record_call(run.instruments, "gpt-4o-mini", "openai", cost=0.002)

    run.provider.shutdown()

    lines = run.out.getvalue().splitlines()
    assert "Total cost:     $0.003000" in lines
    assert "Total requests: 2" in lines


def test_ignores_other_instrumentations_metrics_of_the_same_name(run: Run) -> None:
    record_call(run.instruments, "gpt-4o-mini", "openai", cost=0.001)
    other = create_instruments(run.provider.get_meter("opentelemetry.instrumentation.openai_v2"))
    record_call(other, "gpt-4o-mini", "openai", cost=0.5)

    run.provider.shutdown()

    lines = run.out.getvalue().splitlines()
    assert "Total cost:     $0.001000" in lines
    assert "Total requests: 1" in lines


def test_shutdown_twice_prints_once(run: Run) -> None:
    record_call(run.instruments, "gpt-4o-mini", "openai", cost=0.001)

    run.provider.shutdown()
    run.reader.shutdown()

    assert run.out.getvalue().count("LLM SPEND SUMMARY") == 1


def test_empty_run_prints_one_short_line(run: Run) -> None:
    observe_budgets(run.meter, {"default": (0.0, 0.01)})

    run.provider.shutdown()

    assert run.out.getvalue() == EMPTY_SUMMARY + "\n"


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("stream closed")


def test_a_broken_stream_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    provider = Telemetry.build(
        readers=[SpendSummaryReader(out=BrokenStream())], shutdown_on_exit=False
    ).meter_provider
    record_call(create_instruments(provider.get_meter("spendmeter")), "m", "openai", cost=0.1)

    with caplog.at_level(logging.WARNING, logger="spendmeter.summary"):
        provider.shutdown()

    assert "could not print the spend summary" in caplog.text


def test_writes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    provider = Telemetry.build(
        readers=[SpendSummaryReader()], shutdown_on_exit=False
    ).meter_provider
    record_call(create_instruments(provider.get_meter("spendmeter")), "m", "openai", cost=0.25)

    provider.shutdown()

    captured = capsys.readouterr()
    assert "Total cost:     $0.250000" in captured.err.splitlines()
    assert captured.out == ""


def test_unpriced_spend_is_never_shown_as_free() -> None:
    totals = SpendTotals(models=(ModelSpend("local", requests=2, unpriced_calls=2),))

    lines = render_summary(totals).splitlines()

    assert "Total cost:     unknown" in lines
    assert lines[-2].split()[-1] == "unpriced"


def test_partly_priced_and_failed_only_models() -> None:
    totals = SpendTotals(
        models=(
            ModelSpend("failing", requests=3),
            ModelSpend("mixed", requests=3, cost=0.002, unpriced_calls=1),
        ),
        budgets=(BudgetSpend("default", spent=0.01, limit=0.01),),
    )

    lines = render_summary(totals).splitlines()

    assert "Total cost:     $0.002000" in lines
    assert "Budget:         $0.0100 (OK)   Remaining: $0.000000" in lines
    assert lines[-3].endswith("$0.002000 +1 unpriced")
    assert lines[-2].startswith("failing") and lines[-2].endswith("   -")


@pytest.mark.integration
def test_opentelemetry_instrument_loads_the_spend_summary_exporter(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from opentelemetry import metrics

        meter = metrics.get_meter("spendmeter")
        attributes = {{
            {sc.GEN_AI_REQUEST_MODEL!r}: "gpt-4o-mini",
            {sc.GEN_AI_PROVIDER_NAME!r}: "openai",
            {sc.GEN_AI_OPERATION_NAME!r}: "chat",
        }}
        meter.create_counter({sc.METRIC_COST!r}, unit="USD").add(0.0125, attributes)
        meter.create_histogram({sc.METRIC_OPERATION_DURATION!r}, unit="s").record(0.5, attributes)
        """
    )
    result = run_instrumented(["-c", script], cwd=tmp_path, OTEL_METRICS_EXPORTER="spend_summary")

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "Total cost:     $0.012500" in lines
    assert "Total requests: 1" in lines


def test_a_cost_below_a_millionth_is_not_shown_as_zero() -> None:
    totals = SpendTotals(
        models=(ModelSpend("text-embedding-3-small", 1, 10, 0, 2e-07, 0),), budgets=()
    )

    text = render_summary(totals)

    assert "$0.0000002" in text
    assert "$0.000000 " not in text and not text.rstrip().endswith("$0.000000")


def test_since_leaves_out_what_was_spent_before() -> None:
    before = SpendTotals(
        models=(
            ModelSpend("gpt-4o-mini", 2, 20, 40, cost=0.002),
            ModelSpend("only-before", 1, 5, 5, cost=0.001),
            ModelSpend("my-finetune", 1, 10, 10, cost=None, unpriced_calls=1),
        )
    )
    now = SpendTotals(
        models=(
            ModelSpend("gpt-4o-mini", 10, 100, 200, cost=0.010),
            ModelSpend("only-before", 1, 5, 5, cost=0.001),
            ModelSpend("my-finetune", 3, 30, 30, cost=None, unpriced_calls=3),
            ModelSpend("only-after", 1, 7, 3, cost=0.0005),
        ),
        budgets=(BudgetSpend("default", 0.0085, 1.0),),
    )

    since = now.since(before)

    assert {model.model: model for model in since.models} == {
        "gpt-4o-mini": ModelSpend("gpt-4o-mini", 8, 80, 160, cost=pytest.approx(0.008)),
        "my-finetune": ModelSpend("my-finetune", 2, 20, 20, cost=None, unpriced_calls=2),
        "only-after": ModelSpend("only-after", 1, 7, 3, cost=0.0005),
    }
    assert since.budgets == now.budgets


def test_calls_since_that_were_not_priced_are_never_shown_as_free() -> None:
    before = SpendTotals(models=(ModelSpend("m", 1, 1, 1, cost=0.5),))
    now = SpendTotals(models=(ModelSpend("m", 3, 3, 3, cost=0.5, unpriced_calls=2),))

    [model] = now.since(before).models

    assert model.cost is None
    assert "unpriced" in render_summary(now.since(before))


def test_spans_are_flushed_before_the_summary_prints() -> None:
    out = io.StringIO()

    class Recorder(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            out.write("spans exported\n")
            return SpanExportResult.SUCCESS

    telemetry = Telemetry.build(
        first=lambda _: BatchSpanProcessor(Recorder(), schedule_delay_millis=600_000),
        readers=[SpendSummaryReader(out=out)],
    )
    _lifecycle.track_tracer_provider(telemetry.tracer_provider)
    telemetry.tracer_provider.get_tracer("test").start_span("call").end()

    telemetry.meter_provider.shutdown()  # first, as at exit under opentelemetry-instrument
    telemetry.tracer_provider.shutdown()

    assert out.getvalue().splitlines() == ["spans exported", EMPTY_SUMMARY]
