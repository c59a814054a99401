"""spendmeter beside other GenAI instrumentations: each call counted once, and returned untouched.

The other instrumentations are real (the `test` extra installs them) and the provider is a real
HTTP server on loopback (tests/fake_openai.py): ``azure/`` calls go through the openai SDK's
``create()``, where provider-SDK instrumentations watch; ``openai/`` calls through LiteLLM's own
HTTP client.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import litellm
import pytest
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.openai import OpenAIInstrumentor as TraceloopOpenAI
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.semconv_ai import SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY

from spendmeter import semconv as sc
from tests._support import MESSAGES, FakeProvider, Telemetry, registered_provider
from tests.fake_openai import EMBEDDING_MODEL, MODEL, FakeOpenAIServer

CASES = [
    (provider, kind, is_async)
    for provider in ("openai", "azure")
    for kind in ("chat", "stream", "embedding")
    for is_async in (False, True)
]


def fresh_sdk_clients() -> None:
    """LiteLLM keeps its openai SDK clients between calls, and a client's ``with_raw_response``
    holds the ``create`` it first saw: a client made before an instrumentation was instrumented
    (or under another test's) would call past it."""
    litellm.in_memory_llm_clients_cache.flush_cache()


@pytest.fixture(autouse=True)
def _fresh_sdk_clients() -> None:
    fresh_sdk_clients()


def on_our_providers(instrumentor: Any, providers: Telemetry) -> Iterator[Any]:
    """Instruments another instrumentation on spendmeter's providers, when called; uninstruments
    it after the test."""

    def _instrument() -> None:
        instrumentor.instrument(
            tracer_provider=providers.tracer_provider, meter_provider=providers.meter_provider
        )

    yield _instrument
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def traceloop(providers: Telemetry) -> Iterator[Any]:
    """Traceloop's openai SDK instrumentation."""
    yield from on_our_providers(TraceloopOpenAI(), providers)


@pytest.fixture
def openai_v2(providers: Telemetry) -> Iterator[Any]:
    """The contrib openai-v2 instrumentation."""
    # Imported here: it imports beside opentelemetry-util-genai 1.1 only (pyproject.toml).
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    yield from on_our_providers(OpenAIInstrumentor(), providers)


async def call(openai_server: FakeOpenAIServer, provider: str, kind: str, is_async: bool) -> Any:
    """Make one call; what it returned, as plain data to compare with another run's."""
    if kind == "embedding":
        kwargs = openai_server.litellm_kwargs(provider, EMBEDDING_MODEL)
        fn = litellm.aembedding if is_async else litellm.embedding
        response = fn(input=["what does it cost"], **kwargs)
        response = await response if is_async else response
        vectors = [item["embedding"] for item in response.data]
        return response.model, vectors, response.usage.prompt_tokens
    kwargs = openai_server.litellm_kwargs(provider, MODEL)
    stream = kind == "stream"
    if is_async:
        response = await litellm.acompletion(messages=MESSAGES, stream=stream, **kwargs)
    else:
        response = litellm.completion(messages=MESSAGES, stream=stream, **kwargs)
    if not stream:
        usage = response.usage
        message = response.choices[0].message
        return response.id, response.model, message.content, usage.prompt_tokens
    chunks = [chunk async for chunk in response] if is_async else list(response)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    return len(chunks), text, [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]


def gen_ai_spans(telemetry: Telemetry) -> tuple[Any, list[Any]]:
    """spendmeter's one span, and every other span, which must be its descendants."""
    spans = telemetry.spans()
    ours = [s for s in spans if s.instrumentation_scope.name == sc.INSTRUMENTATION_SCOPE]
    assert len(ours) == 1, [(s.name, s.instrumentation_scope.name) for s in spans]
    return ours[0], [s for s in spans if s is not ours[0]]


def point_count(telemetry: Telemetry, metric: str) -> Counter[Any]:
    """Recorded measurements of a histogram across every instrumentation, by token type."""
    counts: Counter[Any] = Counter()
    for point in telemetry.points(metric):
        counts[point.attributes.get(sc.GEN_AI_TOKEN_TYPE)] += point.count
    return counts


@pytest.mark.parametrize(("provider", "kind", "is_async"), CASES)
async def test_each_call_is_counted_once_beside_traceloop(
    openai_server: FakeOpenAIServer,
    instrument: Any,
    traceloop: Any,
    provider: str,
    kind: str,
    is_async: bool,
) -> None:
    bare = await call(openai_server, provider, kind, is_async)  # before anything is instrumented
    telemetry = instrument()
    traceloop()
    fresh_sdk_clients()

    assert await call(openai_server, provider, kind, is_async) == bare

    span, others = gen_ai_spans(telemetry)
    assert span.attributes[sc.GEN_AI_REQUEST_MODEL].startswith(f"{provider}/")
    assert all(other.parent.span_id == span.context.span_id for other in others)
    assert point_count(telemetry, sc.METRIC_OPERATION_DURATION) == {None: 1}
    types = {"input": 1} if kind == "embedding" else {"input": 1, "output": 1}
    assert point_count(telemetry, sc.METRIC_TOKEN_USAGE) == types


def test_traceloop_alone_records_the_sdk_call(
    openai_server: FakeOpenAIServer, providers: Telemetry, traceloop: Any
) -> None:
    """What spendmeter's signals prevent: without spendmeter, Traceloop records the call."""
    traceloop()
    litellm.completion(messages=MESSAGES, **openai_server.litellm_kwargs("azure", MODEL))
    assert [span.name for span in providers.spans()] == ["openai.chat"]
    assert point_count(providers, sc.METRIC_OPERATION_DURATION) == {None: 1}


_LAST_CHUNK = {
    "text": "ok",
    "is_finished": True,
    "finish_reason": "stop",
    "index": 0,
    "tool_use": None,
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class _ContextRecorder(FakeProvider):
    """Records the suppression keys in the context where LiteLLM runs the provider's code,
    for a plain call and inside a stream's first chunk, which LiteLLM asks for lazily."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, Any]] = []

    def _record(self) -> None:
        self.seen.append(
            (
                otel_context.get_value(SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY),
                otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY),
            )
        )

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        self._record()
        return super().completion(*args, **kwargs)

    def streaming(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self._record()  # runs at the first next(), after the wrapped call has returned
        yield _LAST_CHUNK

    async def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self._record()
        yield _LAST_CHUNK


async def test_provider_code_runs_with_traceloop_key_but_not_the_generic_one(
    telemetry: Any,
) -> None:
    recorder = _ContextRecorder()
    with registered_provider("ctxllm", recorder):
        litellm.completion(model="ctxllm/m", messages=MESSAGES)
        stream = litellm.completion(model="ctxllm/m", messages=MESSAGES, stream=True)
        assert otel_context.get_value(SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY) is None
        list(stream)
        astream = await litellm.acompletion(model="ctxllm/m", messages=MESSAGES, stream=True)
        [chunk async for chunk in astream]
    # HTTP instrumentations still see the call: only GenAI ones are told to step aside.
    assert recorder.seen == [(True, None)] * 3
    assert otel_context.get_value(SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY) is None


def test_openai_v2_is_named_in_one_warning(
    fake_provider: FakeProvider,
    instrument: Any,
    openai_v2: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Instrumented after spendmeter, as opentelemetry-instrument may load it: still found.
    instrument()
    openai_v2()
    with caplog.at_level(logging.WARNING, logger="spendmeter"):
        for _ in range(3):
            litellm.completion(model="fakellm/fake-model", messages=MESSAGES)
    warnings = [r.getMessage() for r in caplog.records if "openai-v2" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openai" in warnings[0]
    assert "gen_ai.client.token.usage" in warnings[0]


def test_no_warning_beside_instrumentations_that_step_aside(
    fake_provider: FakeProvider, telemetry: Any, traceloop: Any, caplog: pytest.LogCaptureFixture
) -> None:
    traceloop()
    with caplog.at_level(logging.WARNING, logger="spendmeter"):
        litellm.completion(model="fakellm/fake-model", messages=MESSAGES)
    assert not [r for r in caplog.records if "step aside" in r.getMessage()]


class _UtilGenAIProvider(FakeProvider):
    """A provider whose code is instrumented with opentelemetry-util-genai, as an SDK
    instrumentation built on it would be: an inference and an embedding per call."""

    def __init__(self, handler: Any) -> None:
        super().__init__()
        self.handler = handler
        self.invocations: list[str] = []

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        for invocation in (
            self.handler.inference("openai", request_model="m"),
            self.handler.embedding("openai", request_model="e"),
        ):
            with invocation:
                invocation.input_tokens = 3
            self.invocations.append(type(invocation).__name__)
        return super().completion(*args, **kwargs)


def test_util_genai_invocations_inside_a_call_are_suppressed(telemetry: Any) -> None:
    invocation_module = pytest.importorskip("opentelemetry.util.genai.invocation")
    if not hasattr(invocation_module, "InferenceData"):
        pytest.skip("opentelemetry-util-genai < 1.3 suppresses no nested invocation")
    from opentelemetry.util.genai.handler import TelemetryHandler

    handler = TelemetryHandler(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    provider = _UtilGenAIProvider(handler)
    with registered_provider("genaillm", provider):
        for _ in range(2):  # the shared context data takes nothing from the first call
            litellm.completion(model="genaillm/m", messages=MESSAGES)
    expected = ["SuppressedInferenceInvocation", "SuppressedEmbeddingInvocation"]
    assert provider.invocations == expected * 2
    scopes = {span.instrumentation_scope.name for span in telemetry.spans()}
    assert scopes == {sc.INSTRUMENTATION_SCOPE}
    assert point_count(telemetry, sc.METRIC_OPERATION_DURATION) == {None: 2}
