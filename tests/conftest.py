"""Shared fixtures: in-memory OpenTelemetry pipelines, an instrumented LiteLLM, and a fake
LiteLLM provider that counts the requests it receives and answers with chosen usage."""

from __future__ import annotations

import os

# LiteLLM reads this at import: price map from the installed package, never from the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import litellm
import pytest
from litellm import CustomLLM, ModelResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spendmeter import LiteLLMInstrumentor

MESSAGES = [{"role": "user", "content": "How much does this cost?"}]


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def metric_sum(self, name: str) -> float:
        return sum(p.sum if hasattr(p, "sum") else p.value for p in self.points(name))


@pytest.fixture(autouse=True)
def _fresh_fault_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first failure of a telemetry step at WARNING, as an app would."""
    monkeypatch.setattr("spendmeter._guard._failed", set())


@pytest.fixture
def providers() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(exporter, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def instrument(providers: Telemetry) -> Iterator[Any]:
    """Instrument with the in-memory providers; ``instrument(pricing=...)`` re-instruments."""
    instrumentor = LiteLLMInstrumentor()

    def _instrument(**kwargs: Any) -> Telemetry:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(
            tracer_provider=providers.tracer_provider,
            meter_provider=providers.meter_provider,
            **kwargs,
        )
        return providers

    yield _instrument
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def telemetry(instrument: Any) -> Telemetry:
    return instrument()


@dataclass
class FakeProvider(CustomLLM):
    """A LiteLLM provider that answers from memory and counts what reaches it."""

    model: str = "fake-model"
    usage: dict[str, Any] | None = field(
        default_factory=lambda: {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    )
    requests: int = 0

    def __post_init__(self) -> None:
        super().__init__()

    def _response(self) -> ModelResponse:
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


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    with registered_provider("fakellm", provider):
        yield provider


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[Any]:
    """A fresh, empty redis-server of the test's own (tests/redis_server.py), stopped after it."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.kill()
