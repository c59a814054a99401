"""What the tests share besides fixtures (those are in conftest.py): the in-memory OpenTelemetry
pipelines every test builds its telemetry from, a fake LiteLLM provider that counts the requests
it receives, and the readers of spans and metrics. Tests import it as ``tests._support``; the
subprocess apps of the suite (``python -m tests.<app>``) import it too."""

from __future__ import annotations

import os
import threading

# LiteLLM reads this at import: price map from the installed package, never from the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import litellm
from litellm import CustomLLM, ModelResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric, MetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from spendmeter import BudgetSpanProcessor, LiteLLMInstrumentor

MESSAGES = [{"role": "user", "content": "How much does this cost?"}]


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


@dataclass
class FakeProvider(CustomLLM):
    """A LiteLLM provider that answers from memory and counts what reaches it, from any number
    of threads."""

    model: str = "fake-model"
    usage: dict[str, Any] | None = field(
        default_factory=lambda: {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    )
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__init__()

    def _response(self) -> ModelResponse:
        with self._lock:
            self.requests += 1
        body: dict[str, Any] = {
            "id": "fake-response-1",
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"},
                }
            ],
        }
        if self.usage is not None:
            body["usage"] = self.usage
        return ModelResponse(**body)

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
