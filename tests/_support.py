"""What the tests share besides fixtures (those are in conftest.py): the in-memory OpenTelemetry
pipelines every test builds its telemetry from, a fake LiteLLM provider that counts the requests
it receives, and the readers of spans and metrics. Tests import it as ``tests._support``; the
subprocess apps of the suite (``python -m tests.<app>``) import it too."""

from __future__ import annotations

import os

# LiteLLM reads this at import: price map from the installed package, never from the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from pathlib import Path
from typing import Any

import litellm
from litellm import CustomLLM, ModelResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric, MetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from spendmeter import BudgetExceededError, BudgetSpanProcessor, LiteLLMInstrumentor
from spendmeter import semconv as sc

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"
OPENTELEMETRY_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
MESSAGES = [{"role": "user", "content": "How much does this cost?"}]
ANSWER = "Tokens in and tokens out, both billed."
# The parts of a call's cost; they add up to gen_ai.usage.cost.
COST_PARTS = (
    sc.SPENDMETER_COST_INPUT,
    sc.SPENDMETER_COST_OUTPUT,
    sc.SPENDMETER_COST_CACHE_READ,
    sc.SPENDMETER_COST_CACHE_WRITE,
    sc.SPENDMETER_COST_OTHER,
)


@dataclass
class Telemetry:
    """An in-memory pipeline: spans to ``exporter``, metrics to ``reader``."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    first: SpanProcessor | None = None

    @classmethod
    def build(
        cls,
        *,
        sampler: Sampler | None = None,
        first: Callable[[MeterProvider], SpanProcessor] | None = None,
        readers: Sequence[MetricReader] = (),
        **meter_options: Any,
    ) -> Telemetry:
        """``sampler``: the tracer provider's (None: the SDK default). ``first(meter_provider)``
        makes a span processor that sees each span before the exporter does (a budget that
        reports to these metrics, a batch exporter), kept as ``first``. ``readers`` read the
        metrics beside ``reader``; ``meter_options`` go to the ``MeterProvider``."""
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[*readers, reader], **meter_options)
        tracer_provider = TracerProvider(sampler=sampler)
        processor = None if first is None else first(meter_provider)
        if processor is not None:
            tracer_provider.add_span_processor(processor)
        exporter = InMemorySpanExporter()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(exporter, reader, tracer_provider, meter_provider, processor)

    @property
    def budget(self) -> BudgetSpanProcessor:
        """The budget made by ``first``."""
        assert isinstance(self.first, BudgetSpanProcessor), self.first
        return self.first

    def instrument(self, **options: Any) -> Telemetry:
        """Instrument LiteLLM with these providers (afresh, if it was instrumented already)."""
        instrumentor = LiteLLMInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )
        return self

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def metrics(self, name: str) -> list[Metric]:
        """Every metric of that name, from every instrumentation scope."""
        data = self.reader.get_metrics_data()
        return [
            metric
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
        ]

    def points(self, name: str) -> list[Any]:
        return [point for metric in self.metrics(name) for point in metric.data.data_points]

    def metric_sum(self, name: str) -> float:
        return sum(p.sum if hasattr(p, "sum") else p.value for p in self.points(name))


def answer(
    model: str,
    usage: Any = None,
    *,
    content: str | None = "ok",
    message: Mapping[str, Any] | None = None,
    finish_reason: str = "stop",
    **fields: Any,
) -> ModelResponse:
    """A provider's answer: one choice, ``message`` (by default the assistant saying
    ``content``), ended by ``finish_reason``; ``usage`` when given, then any other ``fields``
    of the response (which may replace those)."""
    if message is None:
        message = {"role": "assistant", "content": content}
    body: dict[str, Any] = {
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": dict(message)}],
    }
    if usage is not None:
        body["usage"] = usage
    return ModelResponse(**{**body, **fields})


def chat(**kwargs: Any) -> Any:
    """One gpt-4o-mini chat call, answered by LiteLLM's mock with ``ANSWER``."""
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("mock_response", ANSWER)
    return litellm.completion(**kwargs)


# --- a fake provider (the ``fake_provider`` fixture routes ``fakellm/...`` to one) -----------

FAKE_MODEL = "fakellm/fake-model"
FAKE_USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
FAKE_PRICES = {FAKE_MODEL: {"input_cost_per_token": 1e-3, "output_cost_per_token": 2e-3}}


@dataclass
class FakeProvider(CustomLLM):
    """A LiteLLM provider that answers from memory and counts what reaches it, from any number
    of threads."""

    model: str = "fake-model"
    usage: dict[str, Any] | None = field(default_factory=lambda: dict(FAKE_USAGE))
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__init__()

    def _response(self) -> ModelResponse:
        with self._lock:
            self.requests += 1
        return answer(self.model, self.usage, id="fake-response-1")

    def completion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return self._response()

    async def acompletion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return self._response()


@contextmanager
def registered_provider(name: str, handler: CustomLLM) -> Iterator[None]:
    """Route LiteLLM's ``<name>/...`` models to ``handler`` for the duration of a test."""
    saved = list(litellm.custom_provider_map)
    litellm.custom_provider_map = [{"provider": name, "custom_handler": handler}]
    litellm.utils.custom_llm_setup()
    try:
        yield
    finally:
        litellm.custom_provider_map = saved


def fake_call_cost(
    prices: Mapping[str, Mapping[str, float]] = FAKE_PRICES,
    usage: Mapping[str, int] | None = FAKE_USAGE,
) -> float:
    """What one call to a ``FakeProvider`` answering with ``usage`` costs at ``prices``."""
    assert usage is not None
    rates = prices[FAKE_MODEL]
    return (
        usage["prompt_tokens"] * rates["input_cost_per_token"]
        + usage["completion_tokens"] * rates["output_cost_per_token"]
    )


def ask_fake(**kwargs: Any) -> Any:
    """One chat call to the fake provider."""
    return litellm.completion(model=FAKE_MODEL, messages=MESSAGES, **kwargs)


# --- budgets ------------------------------------------------------------------------------


class Clock:
    """A budget's clock that reads ``now`` until a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Alerts:
    """A budget's callbacks (or a fleet's, several processors sharing one), as they were
    called: each threshold with the spend then, and the spend each time the budget was
    exceeded."""

    def __init__(self) -> None:
        self.thresholds: list[tuple[float, float]] = []
        self.exceeded: list[float] = []
        self._lock = threading.Lock()

    @property
    def fractions(self) -> list[float]:
        """The thresholds crossed, in the order they were announced."""
        return [fraction for fraction, _ in self.thresholds]

    def on_threshold(self, fraction: float, processor: BudgetSpanProcessor) -> None:
        with self._lock:
            self.thresholds.append((fraction, processor.total_cost))

    def on_budget_exceeded(self, processor: BudgetSpanProcessor) -> None:
        with self._lock:
            self.exceeded.append(processor.total_cost)

    def clear(self) -> None:
        with self._lock:
            self.thresholds.clear()
            self.exceeded.clear()


@dataclass
class Request:
    """What the call path hands a budget: an id unique per call, and its worst case."""

    call_id: str
    worst_case: float | None = None

    def max_cost(self) -> float | None:
        return self.worst_case

    async def amax_cost(self) -> float | None:
        return self.worst_case


_call_ids = count(1)


def request(worst_case: float | None = None) -> Request:
    """A ``Request`` with an id no other call of the run has."""
    return Request(f"test-call-{next(_call_ids)}", worst_case)


def budget_first(budget: float, **options: Any) -> Callable[[MeterProvider], SpanProcessor]:
    """For ``Telemetry.build(first=...)``: a ``BudgetSpanProcessor(budget, **options)`` that
    reports to the pipeline's meter provider."""
    return lambda meter_provider: BudgetSpanProcessor(
        budget, meter_provider=meter_provider, **options
    )


def exceeded_budget(telemetry: Telemetry | None = None) -> BudgetSpanProcessor:
    """A raising budget already past its cap by a call fed to it by hand; on ``telemetry``'s
    tracer provider, if given."""
    budget = BudgetSpanProcessor(0.0, raise_on_budget=True, thresholds=(1.0,))
    try:
        budget.after_call({sc.GEN_AI_REQUEST_MODEL: "earlier"}, 0.01, None)
    except BudgetExceededError:
        assert budget.budget_exceeded
    else:
        raise AssertionError("a call past a raising budget did not raise")
    if telemetry is not None:
        telemetry.tracer_provider.add_span_processor(budget)
    return budget


# --- processes ----------------------------------------------------------------------------


def run_instrumented(
    args: Sequence[str],
    *,
    merged: bool = False,
    cwd: Path = ROOT,
    timeout: float = 120,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``python <args>`` under ``opentelemetry-instrument``, offline, every exporter off unless
    ``env`` sets one; ``merged``: stderr into stdout, in order, as a terminal shows them."""
    environment = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **env,
    }
    return subprocess.run(
        [str(OPENTELEMETRY_INSTRUMENT), sys.executable, *args],
        env=environment,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_demo(*, merged: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    """examples/demo.py under ``opentelemetry-instrument``, its spans printed to the console."""
    demo_env = {"OTEL_SERVICE_NAME": "spendmeter-demo", "OTEL_TRACES_EXPORTER": "console", **env}
    return run_instrumented([str(DEMO)], merged=merged, **demo_env)


def free_port() -> int:
    """A loopback TCP port nothing listens on, just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
