"""Shared fixtures: in-memory OpenTelemetry pipelines, an instrumented LiteLLM, and a fake
LiteLLM provider that counts the requests it receives. What they are built from, and the plain
helpers the tests share, are in tests/_support.py."""

from __future__ import annotations

import os

# LiteLLM reads this at import: price map from the installed package, never from the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import copy
import subprocess
from collections.abc import Iterator
from typing import Any

import litellm
import pytest

from spendmeter import BudgetSpanProcessor, LiteLLMInstrumentor
from tests._support import Alerts, FakeProvider, Telemetry, registered_provider, run_demo


@pytest.fixture(autouse=True)
def _fresh_fault_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first failure of a telemetry step at WARNING, as an app would."""
    monkeypatch.setattr("spendmeter._guard._failed", set())


@pytest.fixture
def make_telemetry() -> Iterator[Any]:
    """``make_telemetry(**options)``: a ``Telemetry.build(**options)``, shut down after the test."""
    made: list[Telemetry] = []

    def _make(**options: Any) -> Telemetry:
        made.append(Telemetry.build(**options))
        return made[-1]

    yield _make
    for telemetry in made:
        telemetry.shutdown()


@pytest.fixture
def providers(make_telemetry: Any) -> Telemetry:
    telemetry: Telemetry = make_telemetry()
    return telemetry


@pytest.fixture
def instrument(providers: Telemetry) -> Iterator[Any]:
    """``instrument(**options)`` instruments LiteLLM with the in-memory providers (again, with
    other options, if called again); ``instrument(telemetry, **options)``, with those of another
    ``Telemetry``. Uninstrumented after the test."""

    def _instrument(telemetry: Telemetry | None = None, **options: Any) -> Telemetry:
        return (telemetry or providers).instrument(**options)

    yield _instrument
    instrumentor = LiteLLMInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def telemetry(instrument: Any) -> Telemetry:
    instrumented: Telemetry = instrument()
    return instrumented


@pytest.fixture
def budget(providers: Telemetry) -> Iterator[BudgetSpanProcessor]:
    """A budget never reached on the in-memory providers: it counts every call."""
    processor = BudgetSpanProcessor(1_000.0, meter_provider=providers.meter_provider)
    providers.tracer_provider.add_span_processor(processor)
    yield processor
    processor.shutdown()


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    with registered_provider("fakellm", provider):
        yield provider


@pytest.fixture
def alerts() -> Alerts:
    """Wire a budget's ``on_threshold`` and ``on_budget_exceeded`` to it."""
    return Alerts()


@pytest.fixture
def make_budget(alerts: Alerts) -> Iterator[Any]:
    """``make_budget(budget, **options)``: a ``BudgetSpanProcessor`` that reports to ``alerts``
    unless ``options`` say otherwise; shut down after the test, so none outlives it."""
    made: list[BudgetSpanProcessor] = []

    def _make(budget: float = 1.0, **options: Any) -> BudgetSpanProcessor:
        options.setdefault("on_threshold", alerts.on_threshold)
        options.setdefault("on_budget_exceeded", alerts.on_budget_exceeded)
        made.append(BudgetSpanProcessor(budget, **options))
        return made[-1]

    yield _make
    for processor in made:
        processor.shutdown()


@pytest.fixture
def price_map_restored() -> Iterator[None]:
    """LiteLLM writes per-call custom prices into its global map: put the map back after."""
    saved = copy.deepcopy(litellm.model_cost)
    yield
    litellm.model_cost.clear()
    litellm.model_cost.update(saved)


@pytest.fixture(scope="session")
def demo_run() -> subprocess.CompletedProcess[str]:
    """examples/demo.py, run once for every test that reads what it prints: its spans and
    metrics on the console, then the spend summary, stderr into stdout as a terminal shows
    them. Tests that need it run in another environment run it themselves (``run_demo``)."""
    return run_demo(merged=True, OTEL_METRICS_EXPORTER="console,spend_summary")


@pytest.fixture(scope="module")
def openai_server() -> Iterator[Any]:
    """A fake OpenAI-compatible HTTP server on loopback (tests/fake_openai.py), one a module."""
    from tests.fake_openai import FakeOpenAIServer

    server = FakeOpenAIServer()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[Any]:
    """A fresh, empty redis-server of the test's own (tests/redis_server.py), stopped after it."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.kill()
