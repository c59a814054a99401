"""The instrumentor end to end: one span per call, GenAI attributes, tokens and cost."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from typing import Any

import litellm
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

from spendmeter import BudgetSpanProcessor, LiteLLMInstrumentor
from spendmeter import semconv as sc
from tests._support import ANSWER, MESSAGES, Telemetry, chat


def assert_priced_like_litellm(attributes: Any, response: Any) -> None:
    assert attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_PRICED
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(
        litellm.completion_cost(completion_response=response), rel=1e-12
    )
    parts = sum(
        attributes[key]
        for key in (
            sc.SPENDMETER_COST_INPUT,
            sc.SPENDMETER_COST_OUTPUT,
            sc.SPENDMETER_COST_CACHE_READ,
            sc.SPENDMETER_COST_CACHE_WRITE,
        )
    )
    assert parts == pytest.approx(attributes[sc.GEN_AI_USAGE_COST], rel=1e-9)


def test_completion_makes_one_priced_client_span(telemetry: Telemetry) -> None:
    response = chat(temperature=0.2, max_tokens=50, top_p=0.9, stop="END", seed=7)

    span = telemetry.span()
    attributes = span.attributes
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert attributes[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert attributes[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert attributes[sc.GEN_AI_REQUEST_STREAM] is False
    assert attributes[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    assert attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] == 50
    assert attributes[sc.GEN_AI_REQUEST_TOP_P] == 0.9
    assert attributes[sc.GEN_AI_REQUEST_STOP_SEQUENCES] == ("END",)
    assert attributes[sc.GEN_AI_REQUEST_SEED] == 7
    assert attributes[sc.GEN_AI_RESPONSE_ID] == response.id
    assert attributes[sc.GEN_AI_RESPONSE_MODEL] == response.model
    assert attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == response.usage.prompt_tokens
    assert attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == response.usage.completion_tokens
    assert attributes[sc.SPENDMETER_PRICING_SOURCE] == "litellm"
    assert attributes[sc.SPENDMETER_PRICING_MODEL] == "gpt-4o-mini"
    assert_priced_like_litellm(attributes, response)


def test_response_is_returned_unchanged(telemetry: Telemetry) -> None:
    response = chat()
    assert type(response) is litellm.ModelResponse
    assert response.choices[0].message.content == ANSWER


def test_positional_arguments_bind_as_litellm_binds_them(telemetry: Telemetry) -> None:
    litellm.completion("gpt-4o-mini", MESSAGES, mock_response=ANSWER)
    litellm.text_completion("Say hi", "gpt-3.5-turbo-instruct", mock_response="hi")

    chat_span, text_span = telemetry.spans()
    assert chat_span.attributes[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert text_span.name == "text_completion gpt-3.5-turbo-instruct"
    assert text_span.attributes[sc.GEN_AI_OPERATION_NAME] == "text_completion"


async def test_acompletion_makes_exactly_one_span(telemetry: Telemetry) -> None:
    response = await litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER
    )

    span = telemetry.span()
    assert span.name == "chat gpt-4o-mini"
    assert_priced_like_litellm(span.attributes, response)


def test_span_is_current_during_the_call(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handle request") as parent:
        chat()
    llm_span = next(s for s in telemetry.spans() if s.name.startswith("chat"))
    assert llm_span.parent is not None
    assert llm_span.parent.span_id == parent.get_span_context().span_id


def test_embedding_is_priced(telemetry: Telemetry) -> None:
    response = litellm.embedding(
        model="text-embedding-3-small", input=["a", "b"], mock_response=[0.1, 0.2]
    )

    span = telemetry.span()
    assert span.name == "embeddings text-embedding-3-small"
    assert span.attributes[sc.GEN_AI_OPERATION_NAME] == "embeddings"
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == response.usage.prompt_tokens
    assert span.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(
        litellm.completion_cost(completion_response=response), rel=1e-12
    )


async def test_aembedding_and_atext_completion_make_one_span_each(telemetry: Telemetry) -> None:
    await litellm.aembedding(model="text-embedding-3-small", input=["a"], mock_response=[0.1])
    response = await litellm.atext_completion(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", mock_response="hi"
    )

    names = sorted(span.name for span in telemetry.spans())
    assert names == ["embeddings text-embedding-3-small", "text_completion gpt-3.5-turbo-instruct"]
    text_span = next(s for s in telemetry.spans() if s.name.startswith("text"))
    assert text_span.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(
        litellm.completion_cost(completion_response=response), rel=1e-12
    )


# --- streams ------------------------------------------------------------------------------


def test_stream_with_final_usage_is_priced_from_it(telemetry: Telemetry) -> None:
    stream = chat(stream=True, stream_options={"include_usage": True})
    assert telemetry.spans() == []  # the span lives as long as the stream

    chunks = list(stream)
    span = telemetry.span()
    rebuilt = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == rebuilt.usage.prompt_tokens
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == rebuilt.usage.completion_tokens
    assert span.attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert span.attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    assert_priced_like_litellm(span.attributes, rebuilt)


def test_stream_without_usage_is_estimated_locally(telemetry: Telemetry) -> None:
    chunks = list(chat(stream=True))

    span = telemetry.span()
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == ANSWER
    expected_output = litellm.token_counter(
        model="gpt-4o-mini", text=ANSWER, count_response_tokens=True
    )
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == litellm.token_counter(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == expected_output
    assert span.attributes[sc.GEN_AI_USAGE_COST] > 0


def test_stream_without_usage_counts_its_prompt_as_litellm_does(telemetry: Telemetry) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_price",
                "description": "The price of a model per million tokens",
                "parameters": {"type": "object", "properties": {"model": {"type": "string"}}},
            },
        }
    ]
    # Any `tools` makes LiteLLM import its MCP handler, which needs the optional `mcp`
    # package; LiteLLM's own switch skips it (the mocked call uses no MCP server).
    chunks = list(chat(stream=True, tools=tools, _skip_mcp_handler=True))

    # DESIGN.md 4: counted exactly as LiteLLM's stream_chunk_builder counts the stream.
    rebuilt = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    assert telemetry.span().attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == rebuilt.usage.prompt_tokens


def test_stream_proxy_behaves_like_litellms_stream(telemetry: Telemetry) -> None:
    stream = chat(stream=True)
    assert isinstance(stream, litellm.CustomStreamWrapper)
    assert iter(stream) is stream
    assert stream.model == "gpt-4o-mini"
    list(stream)


def test_stream_broken_out_of_ends_span_when_collected(telemetry: Telemetry) -> None:
    stream = chat(stream=True)
    for _chunk in stream:
        break
    assert telemetry.spans() == []
    del stream
    gc.collect()

    span = telemetry.span()
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] >= 1


def test_stream_closed_early_ends_span_once(telemetry: Telemetry) -> None:
    stream = chat(stream=True)
    next(stream)
    stream.close()
    stream.close()
    del stream
    gc.collect()
    assert len(telemetry.spans()) == 1


def test_stream_used_as_context_manager_ends_span(telemetry: Telemetry) -> None:
    with chat(stream=True) as stream:
        next(stream)
    assert len(telemetry.spans()) == 1


async def test_async_stream_with_and_without_usage(telemetry: Telemetry) -> None:
    with_usage = await litellm.acompletion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response=ANSWER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in with_usage]
    without_usage = await litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, stream=True
    )
    async for _chunk in without_usage:
        pass

    priced, estimated = telemetry.spans()
    rebuilt = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    assert_priced_like_litellm(priced.attributes, rebuilt)
    assert estimated.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED


async def test_async_stream_aclose_ends_span(telemetry: Telemetry) -> None:
    stream = await litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, stream=True
    )
    await stream.__anext__()
    await stream.aclose()
    assert len(telemetry.spans()) == 1


# --- failures, suppression, uninstrument ----------------------------------------------------


def test_failure_marks_span_and_reraises_the_same_exception(telemetry: Telemetry) -> None:
    error = litellm.RateLimitError("slow down", llm_provider="openai", model="gpt-4o-mini")
    with pytest.raises(litellm.RateLimitError) as raised:
        chat(mock_response=error)

    span = telemetry.span()
    assert span.attributes[sc.ERROR_TYPE] == "RateLimitError"
    assert span.status.status_code is StatusCode.ERROR
    assert sc.GEN_AI_USAGE_COST not in span.attributes
    assert raised.value is error or isinstance(raised.value, litellm.RateLimitError)


def test_suppressed_calls_make_no_span(telemetry: Telemetry) -> None:
    with suppress_instrumentation():
        chat()
    assert telemetry.spans() == []


def test_uninstrument_restores_every_original(instrument: Any, providers: Telemetry) -> None:
    names = (
        "completion",
        "acompletion",
        "embedding",
        "aembedding",
        "text_completion",
        "atext_completion",
    )
    # Where LiteLLM defines them: `litellm.completion` may be a dispatch function over these.
    originals = {name: getattr(litellm.main, name) for name in names}
    instrument()
    assert all(getattr(litellm.main, name) is not originals[name] for name in names)
    LiteLLMInstrumentor().uninstrument()

    assert all(getattr(litellm.main, name) is originals[name] for name in names)
    chat()
    assert providers.spans() == []


@pytest.mark.parametrize("loop", [False, True], ids=["no loop running", "inside a running loop"])
def test_a_sync_call_with_fallbacks_is_one_call(
    telemetry: Telemetry, budget: BudgetSpanProcessor, loop: bool
) -> None:
    # LiteLLM runs a sync call's fallbacks as a coroutine; inside a running loop, on a thread
    # of its own, which must still see the call it belongs to.
    def ask() -> None:
        chat(fallbacks=["gpt-4o"])

    if loop:

        async def inside_a_loop() -> None:
            ask()

        asyncio.run(inside_a_loop())
    else:
        ask()

    cost = telemetry.span().attributes[sc.GEN_AI_USAGE_COST]
    assert telemetry.metric_sum(sc.METRIC_COST) == cost
    assert (budget.request_count, budget.total_cost) == (1, cost)


def test_uninstrument_restores_litellms_sync_to_async_bridge(instrument: Any) -> None:
    from litellm.litellm_core_utils import asyncify, fallback_utils

    original = asyncify.run_async_function
    instrument()
    assert fallback_utils.run_async_function is not original
    LiteLLMInstrumentor().uninstrument()

    assert asyncify.run_async_function is original
    assert fallback_utils.run_async_function is original


def test_fault_inside_telemetry_is_logged_not_raised(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("pricing exploded")

    monkeypatch.setattr("spendmeter.pricing.Pricer.price", broken)
    with caplog.at_level(logging.WARNING, logger="spendmeter"):
        response = chat()

    assert response.choices[0].message.content == ANSWER
    assert "pricing failed" in caplog.text
    assert len(telemetry.spans()) == 1


# --- request attributes: content, credentials, user, metadata --------------------------------


def test_content_is_not_recorded_by_default(telemetry: Telemetry) -> None:
    chat()
    attributes = telemetry.span().attributes
    assert sc.GEN_AI_INPUT_MESSAGES not in attributes
    assert sc.GEN_AI_OUTPUT_MESSAGES not in attributes


def test_content_is_recorded_when_asked(instrument: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    telemetry = instrument()
    chat()
    attributes = telemetry.span().attributes
    assert "How much does this cost?" in attributes[sc.GEN_AI_INPUT_MESSAGES]
    assert ANSWER in attributes[sc.GEN_AI_OUTPUT_MESSAGES]


@pytest.mark.parametrize(
    ("include_usage", "status"), [(True, sc.PRICING_PRICED), (False, sc.PRICING_ESTIMATED)]
)
def test_streamed_content_is_recorded_whole_when_asked(
    instrument: Any, monkeypatch: pytest.MonkeyPatch, include_usage: bool, status: str
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    telemetry = instrument()
    chunks = list(chat(stream=True, stream_options={"include_usage": include_usage}))

    attributes = telemetry.span().attributes
    output = json.loads(attributes[sc.GEN_AI_OUTPUT_MESSAGES])
    assert len(chunks) > 2
    parts = [{"type": "text", "content": ANSWER}]
    assert output == [{"role": "assistant", "parts": parts, "finish_reason": "stop"}]
    # Without usage, the same text is counted locally as well.
    assert attributes[sc.SPENDMETER_PRICING_STATUS] == status
    assert attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == litellm.token_counter(
        model="gpt-4o-mini", text=ANSWER, count_response_tokens=True
    )


def test_credentials_are_never_recorded(instrument: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    monkeypatch.setenv("SPENDMETER_METADATA_KEYS", "team")
    telemetry = instrument()
    chat(
        api_key="sk-very-secret",
        extra_headers={"Authorization": "Bearer sk-header-secret"},
        metadata={"team": "search", "api_key": "sk-meta-secret"},
    )
    values = " ".join(str(value) for value in telemetry.span().attributes.values())
    assert "secret" not in values


def test_user_and_listed_metadata_become_attributes(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDMETER_METADATA_KEYS", "team, feature")
    telemetry = instrument()
    chat(user="user-7", metadata={"team": "search", "feature": "autocomplete", "other": "x"})

    attributes = telemetry.span().attributes
    assert attributes[sc.USER_ID] == "user-7"
    assert attributes["spendmeter.metadata.team"] == "search"
    assert attributes["spendmeter.metadata.feature"] == "autocomplete"
    assert "spendmeter.metadata.other" not in attributes


def test_server_address_from_api_base(telemetry: Telemetry) -> None:
    chat(api_base="https://llm.internal.example:8443/v1")
    attributes = telemetry.span().attributes
    assert attributes[sc.SERVER_ADDRESS] == "llm.internal.example"
    assert attributes[sc.SERVER_PORT] == 8443


def test_a_function_bound_before_instrument_is_still_metered(instrument: Any) -> None:
    from litellm import completion  # bound before instrument(): LiteLLM's dispatch function

    telemetry = instrument()
    completion(model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER)

    assert telemetry.span().attributes[sc.GEN_AI_USAGE_COST] > 0


def test_an_error_raised_while_reading_a_stream_fails_its_span_but_keeps_its_cost(
    telemetry: Telemetry,
) -> None:
    with pytest.raises(KeyError), chat(stream=True) as stream:
        next(stream)
        raise KeyError("the caller's own bug")

    span = telemetry.span()
    assert span.attributes[sc.ERROR_TYPE] == "KeyError"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED
    [duration] = telemetry.points(sc.METRIC_OPERATION_DURATION)
    assert duration.attributes[sc.ERROR_TYPE] == "KeyError"


async def test_an_error_raised_inside_async_with_stream_fails_its_span(
    telemetry: Telemetry,
) -> None:
    stream = await litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, stream=True
    )
    with pytest.raises(ValueError):
        async with stream:
            await stream.__anext__()
            raise ValueError("the caller gave up")

    span = telemetry.span()
    assert span.attributes[sc.ERROR_TYPE] == "ValueError"
    assert sc.GEN_AI_USAGE_COST in span.attributes


def test_a_key_echoed_in_a_provider_error_never_reaches_the_span(telemetry: Telemetry) -> None:
    leaked = (
        "AuthenticationError: Incorrect API key provided: sk-proj-abcdefghijklmnop1234. "
        "POST https://generativelanguage.googleapis.com/v1/models?key=AIzaSyA12345678901234567890 "
        "Authorization: Bearer secret-token-123 (own key: my-own-key-42)"
    )
    error = litellm.AuthenticationError(leaked, llm_provider="openai", model="gpt-4o-mini")
    with pytest.raises(litellm.AuthenticationError):
        chat(mock_response=error, api_key="my-own-key-42")

    description = telemetry.span().status.description or ""
    for secret in ("sk-proj-abcdefghij", "AIzaSyA1234567", "secret-token-123", "my-own-key-42"):
        assert secret not in description
    assert "[REDACTED]" in description
    assert "Incorrect API key provided" in description
