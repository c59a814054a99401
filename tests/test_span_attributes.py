"""Span attributes the GenAI semantic conventions define beyond tokens and cost: the output type
asked for, embedding dimensions, the conversation, and (content capture on) tool definitions
and reasoning as message parts."""

from __future__ import annotations

import json
from typing import Any

import litellm
import pytest
from litellm import ModelResponse
from pydantic import BaseModel

from spendmeter import semconv as sc
from tests._support import MESSAGES, FakeProvider, Telemetry, chat, registered_provider
from tests.fake_http import FakeHTTPProvider
from tests.fake_openai import VECTOR, FakeOpenAIServer

CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
TOOL = {
    "type": "function",
    "function": {
        "name": "get_price",
        "description": "The price of a model",
        "parameters": {"type": "object", "properties": {"model": {"type": "string"}}},
    },
}


class Answer(BaseModel):
    price: float


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_object"}, "json"),
        ({"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}, "json"),
        ({"type": "text"}, "text"),
        (Answer, "json"),
        (None, None),
    ],
    ids=["json_object", "json_schema", "text", "pydantic", "none"],
)
def test_output_type_follows_response_format(
    telemetry: Telemetry, response_format: Any, expected: str | None
) -> None:
    chat(**({} if response_format is None else {"response_format": response_format}))
    assert telemetry.span().attributes.get(sc.GEN_AI_OUTPUT_TYPE) == expected


def test_speech_asks_for_speech(telemetry: Telemetry) -> None:
    litellm.speech(model="tts-1", input="hello", voice="alloy", client=FakeHTTPProvider().openai())
    assert telemetry.span().attributes[sc.GEN_AI_OUTPUT_TYPE] == "speech"


def test_embedding_dimensions_are_those_returned_else_those_asked_for(
    telemetry: Telemetry, openai_server: FakeOpenAIServer
) -> None:
    kwargs = openai_server.litellm_kwargs("openai", "text-embedding-3-small")
    litellm.embedding(input=["a"], dimensions=256, **kwargs)  # the fake returns its own
    unreachable = {**kwargs, "api_base": "http://127.0.0.1:9/v1", "max_retries": 0}
    with pytest.raises(litellm.InternalServerError):  # no vectors: what was asked for
        litellm.embedding(input=["a"], dimensions=256, **unreachable)
    returned, asked = (
        s.attributes[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] for s in telemetry.spans()
    )
    assert (returned, asked) == (len(VECTOR), 256)


def test_conversation_id_from_the_metadata_key_named(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDMETER_CONVERSATION_ID_KEY", "session_id")
    telemetry = instrument()
    chat(metadata={"session_id": "conv-42", "other": "x"})
    chat(metadata={"other": "x"})
    first, second = telemetry.spans()
    assert first.attributes[sc.GEN_AI_CONVERSATION_ID] == "conv-42"
    assert sc.GEN_AI_CONVERSATION_ID not in second.attributes


def test_no_conversation_id_unless_a_key_is_named(telemetry: Telemetry) -> None:
    chat(metadata={"session_id": "conv-42", "conversation_id": "conv-42"})
    assert sc.GEN_AI_CONVERSATION_ID not in telemetry.span().attributes


def test_tool_definitions_only_with_content_capture(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    telemetry = instrument()
    chat(tools=[TOOL])
    assert sc.GEN_AI_TOOL_DEFINITIONS not in telemetry.span().attributes
    telemetry.exporter.clear()

    monkeypatch.setenv(CAPTURE, "true")
    telemetry = instrument()
    chat(tools=[TOOL])
    definitions = json.loads(telemetry.span().attributes[sc.GEN_AI_TOOL_DEFINITIONS])
    assert definitions == [
        {
            "type": "function",
            "name": "get_price",
            "description": "The price of a model",
            "parameters": TOOL["function"]["parameters"],
        }
    ]


class _Reasoner(FakeProvider):
    def _response(self) -> ModelResponse:
        response = super()._response()
        message = response.choices[0].message
        message.reasoning_content = "Prices come from LiteLLM's map."
        message.tool_calls = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_price", "arguments": '{"model": "gpt-4o"}'},
            }
        ]
        response.choices[0].finish_reason = "tool_calls"
        return response


def test_reasoning_and_tool_calls_are_output_message_parts(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE, "true")
    telemetry = instrument()
    with registered_provider("reasoner", _Reasoner()):
        litellm.completion(model="reasoner/r1", messages=MESSAGES)
    (message,) = json.loads(telemetry.span().attributes[sc.GEN_AI_OUTPUT_MESSAGES])
    assert message == {
        "role": "assistant",
        "parts": [
            {"type": "reasoning", "content": "Prices come from LiteLLM's map."},
            {"type": "text", "content": "ok"},
            {
                "type": "tool_call",
                "id": "call_1",
                "name": "get_price",
                "arguments": '{"model": "gpt-4o"}',
            },
        ],
        "finish_reason": "tool_calls",
    }
