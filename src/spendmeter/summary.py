"""The exit spend summary: a MetricReader that prints a table of LLM spend at shutdown.

Three layers, each testable alone: :func:`spend_totals` turns collected ``MetricsData`` into a
plain :class:`SpendTotals`; :func:`render_summary` turns that into text; :class:`SpendSummaryReader`
collects once when the meter provider shuts down and prints the text, once.

One summary per process, covering that process's calls only: a child made by ``fork()``
inherits the parent's metrics, so the reader notes the totals at the fork and the child's
summary leaves them out (:meth:`SpendTotals.since`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    MetricReader,
    MetricsData,
    NumberDataPoint,
)

from spendmeter import _lifecycle
from spendmeter.semconv import (
    GEN_AI_REQUEST_MODEL,
    GEN_AI_TOKEN_TYPE,
    METRIC_BUDGET_LIMIT,
    METRIC_BUDGET_SPENT,
    METRIC_COST,
    METRIC_OPERATION_DURATION,
    METRIC_TOKEN_USAGE,
    METRIC_UNPRICED_CALLS,
    SPENDMETER_BUDGET_NAME,
    TOKEN_TYPE_INPUT,
    TOKEN_TYPE_OUTPUT,
)

_logger = logging.getLogger(__name__)

# Only spendmeter's own meters are read: another GenAI instrumentation (e.g. the OpenAI one, under
# LiteLLM's OpenAI calls) records histograms of the same names and would count calls twice.
METER_NAME_PREFIX = "spendmeter"
UNKNOWN_MODEL = "(unknown)"
EMPTY_SUMMARY = "LLM SPEND SUMMARY: no LLM calls recorded"

_MIN_WIDTH = 50
_MIN_MODEL_WIDTH = 18
_LABEL_WIDTH = 16


@dataclass(frozen=True)
class ModelSpend:
    """What one model cost over the run, across providers and operations."""

    model: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    # None when no call of this model was priced: unknown, never shown as free.
    cost: float | None = None
    unpriced_calls: int = 0


@dataclass(frozen=True)
class BudgetSpend:
    """One budget as its gauges last reported it."""

    name: str
    spent: float
    limit: float

    @property
    def exceeded(self) -> bool:
        return self.spent > self.limit


@dataclass(frozen=True)
class SpendTotals:
    """Everything the summary shows, independent of OpenTelemetry."""

    models: tuple[ModelSpend, ...] = ()
    budgets: tuple[BudgetSpend, ...] = ()

    @property
    def total_requests(self) -> int:
        return sum(model.requests for model in self.models)

    @property
    def total_cost(self) -> float | None:
        """USD of the priced calls; None when no call was priced."""
        costs = [model.cost for model in self.models if model.cost is not None]
        return sum(costs) if costs else None

    @property
    def unpriced_calls(self) -> int:
        return sum(model.unpriced_calls for model in self.models)

    def since(self, earlier: SpendTotals) -> SpendTotals:
        """What was spent after ``earlier`` was taken (both cumulative): models with no call
        since are left out; budgets are as they are now."""
        before = {model.model: model for model in earlier.models}
        models = []
        for model in self.models:
            gone = before.get(model.model)
            spend = model if gone is None else _spend_between(gone, model)
            if spend.requests or spend.unpriced_calls:
                models.append(spend)
        return SpendTotals(models=tuple(models), budgets=self.budgets)


def _spend_between(before: ModelSpend, after: ModelSpend) -> ModelSpend:
    requests = after.requests - before.requests
    unpriced = after.unpriced_calls - before.unpriced_calls
    cost = after.cost
    if cost is not None and before.cost is not None:
        cost -= before.cost
        if cost == 0 and requests == unpriced:
            cost = None  # no call since was priced: unknown, never shown as $0
    return ModelSpend(
        model=after.model,
        requests=requests,
        input_tokens=after.input_tokens - before.input_tokens,
        output_tokens=after.output_tokens - before.output_tokens,
        cost=cost,
        unpriced_calls=unpriced,
    )


# --- MetricsData -> SpendTotals -------------------------------------------------------------


@dataclass
class _ModelTally:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    unpriced_calls: int = 0


@dataclass
class _Tally:
    models: dict[str, _ModelTally] = field(default_factory=dict)
    budget_spent: dict[str, float] = field(default_factory=dict)
    budget_limit: dict[str, float] = field(default_factory=dict)

    def model(self, attributes: dict[str, Any]) -> _ModelTally:
        name = str(attributes.get(GEN_AI_REQUEST_MODEL) or UNKNOWN_MODEL)
        return self.models.setdefault(name, _ModelTally())


def spend_totals(metrics_data: MetricsData | None) -> SpendTotals:
    """Read spendmeter's metrics out of one (cumulative) collection."""
    tally = _Tally()
    for metric_name, point in _spendmeter_points(metrics_data):
        _add_point(tally, metric_name, point)
    models = tuple(
        ModelSpend(
            model=name,
            requests=t.requests,
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            cost=t.cost,
            unpriced_calls=t.unpriced_calls,
        )
        for name, t in tally.models.items()
    )
    # A budget without a limit is not a budget; one whose spend gauge is missing spent nothing.
    budgets = tuple(
        BudgetSpend(name=name, spent=tally.budget_spent.get(name, 0.0), limit=limit)
        for name, limit in tally.budget_limit.items()
    )
    return SpendTotals(models=models, budgets=budgets)


def _spendmeter_points(metrics_data: MetricsData | None) -> Iterator[tuple[str, Any]]:
    if metrics_data is None:
        return
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if not _is_spendmeter_scope(scope_metrics.scope.name):
                continue
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    yield metric.name, point


def _is_spendmeter_scope(name: str) -> bool:
    return name == METER_NAME_PREFIX or name.startswith(METER_NAME_PREFIX + ".")


def _add_point(tally: _Tally, metric_name: str, point: Any) -> None:
    attributes = dict(point.attributes or {})
    # A user's View may change an aggregation; points of an unexpected kind are skipped.
    is_number = isinstance(point, NumberDataPoint)
    is_histogram = isinstance(point, (HistogramDataPoint, ExponentialHistogramDataPoint))
    if metric_name == METRIC_COST and is_number:
        model = tally.model(attributes)
        model.cost = (model.cost or 0.0) + point.value
    elif metric_name == METRIC_OPERATION_DURATION and is_histogram:
        tally.model(attributes).requests += point.count
    elif metric_name == METRIC_TOKEN_USAGE and is_histogram:
        _add_tokens(tally.model(attributes), attributes.get(GEN_AI_TOKEN_TYPE), point.sum)
    elif metric_name == METRIC_UNPRICED_CALLS and is_number:
        tally.model(attributes).unpriced_calls += int(point.value)
    elif metric_name == METRIC_BUDGET_SPENT and is_number:
        tally.budget_spent[_budget_label(attributes)] = float(point.value)
    elif metric_name == METRIC_BUDGET_LIMIT and is_number:
        tally.budget_limit[_budget_label(attributes)] = float(point.value)


def _add_tokens(model: _ModelTally, token_type: object, count: float) -> None:
    if token_type == TOKEN_TYPE_INPUT:
        model.input_tokens += round(count)
    elif token_type == TOKEN_TYPE_OUTPUT:
        model.output_tokens += round(count)


def _budget_label(attributes: dict[str, Any]) -> str:
    """The budget's name, qualified by any other attribute (its scope) so two scopes stay apart."""
    name = str(attributes.get(SPENDMETER_BUDGET_NAME, "budget"))
    others = sorted((k, v) for k, v in attributes.items() if k != SPENDMETER_BUDGET_NAME)
    if not others:
        return name
    return f"{name} ({', '.join(f'{key}={value}' for key, value in others)})"


# --- SpendTotals -> text --------------------------------------------------------------------


def render_summary(totals: SpendTotals) -> str:
    """The summary table (no trailing newline); one short line when no call was recorded."""
    if not totals.models:
        return EMPTY_SUMMARY
    models = sorted(totals.models, key=_by_cost_descending)
    model_width = max(_MIN_MODEL_WIDTH, *(len(model.model) for model in models))
    rows = [_row(model_width, "Model", "Requests", "Input", "Output", "Cost")]
    rows += [_model_row(model_width, model) for model in models]
    width = max(_MIN_WIDTH, *(len(row) for row in rows))
    lines = [
        "=" * width,
        "LLM SPEND SUMMARY",
        "=" * width,
        _labelled("Total cost:", _total_cost_text(totals)),
        _labelled("Total requests:", str(totals.total_requests)),
    ]
    if totals.unpriced_calls:
        lines.append(
            _labelled(
                "Unpriced calls:",
                f"{totals.unpriced_calls} (cost unknown, not counted above)",
            )
        )
    lines += _budget_lines(totals.budgets)
    lines += ["-" * width, *rows, "=" * width]
    return "\n".join(lines)


def _by_cost_descending(model: ModelSpend) -> tuple[bool, float, str]:
    return (model.cost is None, -(model.cost or 0.0), model.model)


def _row(model_width: int, model: str, requests: str, inputs: str, outputs: str, cost: str) -> str:
    return f"{model:<{model_width}} {requests:>8} {inputs:>7} {outputs:>9}   {cost}"


def _model_row(model_width: int, model: ModelSpend) -> str:
    return _row(
        model_width,
        model.model,
        str(model.requests),
        str(model.input_tokens),
        str(model.output_tokens),
        _model_cost_text(model),
    )


def _model_cost_text(model: ModelSpend) -> str:
    if model.cost is None:
        # No priced call: unknown when some went unpriced, nothing billed when all failed.
        return "unpriced" if model.unpriced_calls else "-"
    text = _usd(model.cost)
    if model.unpriced_calls:
        text += f" +{model.unpriced_calls} unpriced"
    return text


def _total_cost_text(totals: SpendTotals) -> str:
    total = totals.total_cost
    if total is None and totals.unpriced_calls:
        return "unknown"
    return _usd(total or 0.0)


def _usd(amount: float) -> str:
    """Dollars to the millionth; a smaller non-zero amount keeps its digits, never shows $0."""
    text = f"{amount:.6f}"
    if amount > 0 and float(text) == 0:
        text = f"{amount:.12f}".rstrip("0")
    return f"${text}"


def _budget_lines(budgets: tuple[BudgetSpend, ...]) -> list[str]:
    named = len(budgets) > 1
    return [
        _labelled(f"Budget {budget.name}:" if named else "Budget:", _budget_text(budget))
        for budget in sorted(budgets, key=lambda budget: budget.name)
    ]


def _budget_text(budget: BudgetSpend) -> str:
    if budget.exceeded:
        return f"${budget.limit:.4f} (EXCEEDED)   Over by: ${budget.spent - budget.limit:.6f}"
    return f"${budget.limit:.4f} (OK)   Remaining: ${budget.limit - budget.spent:.6f}"


def _labelled(label: str, value: str) -> str:
    return f"{label:<{_LABEL_WIDTH}}{value}"


# --- the reader -----------------------------------------------------------------------------

# Cumulative everywhere: the one collection at shutdown must hold the whole run, and any
# collection forced earlier (force_flush) must not consume what the summary needs.
_CUMULATIVE: dict[type, AggregationTemporality] = {
    instrument: AggregationTemporality.CUMULATIVE
    for instrument in (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
}


class SpendSummaryReader(MetricReader):
    """Prints the spend summary, once, when its meter provider shuts down.

    ``out`` defaults to ``sys.stderr`` as it is when printing. Usable with no arguments, as the
    ``spend_summary`` metrics exporter of ``opentelemetry-instrument``
    (``OTEL_METRICS_EXPORTER=otlp,spend_summary``). Printing never raises.

    The spans are flushed first, so that the summary is the last thing printed. It also
    prints when the process is stopped by SIGTERM and the app has no handler of its own, and
    when a multiprocessing worker ends (``spendmeter._lifecycle``). After ``fork()`` the
    child's summary covers the child's calls only.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)
        self._out = out
        self._lock = threading.Lock()
        self._latest: MetricsData | None = None
        self._shut_down = False
        # The totals a forked child inherited (None: not a child), and those taken in the
        # parent while it forks.
        self._inherited: SpendTotals | None = None
        self._at_fork: SpendTotals | None = None
        _live_readers.add(self)
        _lifecycle.install()

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        with self._lock:
            self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        with self._lock:
            if self._shut_down:
                _logger.debug("SpendSummaryReader already shut down; summary not printed again")
                return
            self._shut_down = True
        try:
            _lifecycle.flush_spans(timeout_millis)
            self._collect_final(timeout_millis)
            with self._lock:
                latest = self._latest
            totals = spend_totals(latest)
            if self._inherited is not None:
                totals = totals.since(self._inherited)
                if not totals.models:
                    # A forked worker that made no call: one empty summary per worker would
                    # only bury the parent's.
                    return
            self._print(render_summary(totals))
        except Exception:
            _logger.warning("spendmeter could not print the spend summary", exc_info=True)

    def _collect_final(self, timeout_millis: float) -> None:
        try:
            self.collect(timeout_millis=timeout_millis)
        except Exception:
            # Print what an earlier collection saw rather than nothing.
            _logger.warning("spendmeter: final metric collection failed", exc_info=True)

    def _print(self, text: str) -> None:
        out = self._out if self._out is not None else sys.stderr
        out.write(text + "\n")
        out.flush()

    # --- fork ---------------------------------------------------------------------------

    def _before_fork(self) -> None:
        """In the parent, about to fork: note the totals the child will inherit. Collected
        here, not in the child: there, a lock another thread held at the fork stays held."""
        if self._shut_down or getattr(self, "_collect", None) is None:
            return  # printed already, or not on a meter provider: nothing to leave out
        try:
            self.collect()
            with self._lock:
                self._at_fork = spend_totals(self._latest)
        except Exception:
            _logger.debug("spendmeter: totals at fork not taken", exc_info=True)

    def _after_fork_in_parent(self) -> None:
        self._at_fork = None

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._inherited, self._at_fork = self._at_fork, None


_live_readers: weakref.WeakSet[SpendSummaryReader] = weakref.WeakSet()


def live_readers() -> list[SpendSummaryReader]:
    """Every reader of this process that is still referenced (printed or not)."""
    return list(_live_readers)


def _each_reader(method: str) -> None:
    for reader in live_readers():
        getattr(reader, method)()


os.register_at_fork(
    before=lambda: _each_reader("_before_fork"),
    after_in_parent=lambda: _each_reader("_after_fork_in_parent"),
    after_in_child=lambda: _each_reader("_after_fork_in_child"),
)
