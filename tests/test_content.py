"""Content capture: ``gen_ai.input.messages`` and ``gen_ai.output.messages`` in semconv's message
schema (role, parts, finish_reason), for plain calls and streams, several choices, tool calls."""

from __future__ import annotations

import json
from typing import Any

import litellm
import pytest
from litellm import ModelResponse

from spendmeter import semconv as sc
from tests._support import Telemetry, answer

CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
TOOL_CALL = {
    "id": "call-1",
    "type": "function",
    "function": {"name": "get_price", "arguments": '{"model": "gpt-4.1"}'},
}
TOOL_CALL_PART = {
    "type": "tool_call",
    "id": "call-1",
    "name": "get_price",
    "arguments": '{"model": "gpt-4.1"}',
}


@pytest.fixture
def captured(instrument: Any, monkeypatch: pytest.MonkeyPatch) -> Telemetry:
    monkeypatch.setenv(CAPTURE, "true")
    return instrument()


def messages(telemetry: Telemetry, key: str) -> Any:
    return json.loads(telemetry.span().attributes[key])


def consumed(result: Any) -> Any:
    """A stream read to its end, or the plain response as it is."""
    return list(result) if isinstance(result, litellm.CustomStreamWrapper) else result


def tool_call_answer() -> ModelResponse:
    message = {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
    return answer("gpt-4.1", message=message, finish_reason="tool_calls")


def test_input_messages_follow_the_schema_with_tool_calls_and_their_answers(
    captured: Telemetry,
) -> None:
    earlier = litellm.completion(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "Price of gpt-4.1?"}],
        mock_response=tool_call_answer(),
    )
    captured.exporter.clear()
    history = [
        {"role": "system", "content": "Answer in dollars."},
        {"role": "user", "content": [{"type": "text", "text": "Price of gpt-4.1?"}]},
        earlier.choices[0].message,  # LiteLLM's Message object, sent back as history
        {"role": "tool", "tool_call_id": "call-1", "content": "$2 per million input tokens"},
    ]
    litellm.completion(model="gpt-4.1", messages=history, mock_response="Two dollars.")

    assert messages(captured, sc.GEN_AI_INPUT_MESSAGES) == [
        {"role": "system", "parts": [{"type": "text", "content": "Answer in dollars."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Price of gpt-4.1?"}]},
        {"role": "assistant", "parts": [TOOL_CALL_PART]},
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": "call-1",
                    "response": "$2 per million input tokens",
                }
            ],
        },
    ]


def test_a_text_completions_prompt_is_one_user_message(captured: Telemetry) -> None:
    litellm.text_completion(model="gpt-3.5-turbo-instruct", prompt="Say hi", mock_response="hi")

    assert messages(captured, sc.GEN_AI_INPUT_MESSAGES) == [
        {"role": "user", "parts": [{"type": "text", "content": "Say hi"}]}
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_each_choice_is_one_output_message(captured: Telemetry, stream: bool) -> None:
    consumed(
        litellm.completion(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "Hi"}],
            mock_response="Hello there.",
            n=2,
            stream=stream,
        )
    )

    first, second = messages(captured, sc.GEN_AI_OUTPUT_MESSAGES)
    text = [{"type": "text", "content": "Hello there."}]  # not the two choices interleaved
    assert first == {"role": "assistant", "parts": text, "finish_reason": "stop"}
    assert second["parts"] == text
    # LiteLLM's mock stream ends only the first choice with a reason; its plain answer both.
    assert second.get("finish_reason") == (None if stream else "stop")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_calls_are_output_parts(captured: Telemetry, stream: bool) -> None:
    consumed(
        litellm.completion(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "Price of gpt-4.1?"}],
            mock_response=tool_call_answer(),
            stream=stream,
        )
    )

    assert messages(captured, sc.GEN_AI_OUTPUT_MESSAGES) == [
        {"role": "assistant", "parts": [TOOL_CALL_PART], "finish_reason": "tool_calls"}
    ]


async def test_an_async_stream_records_its_output_too(captured: Telemetry) -> None:
    stream = await litellm.acompletion(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "Hi"}],
        mock_response="Hello there.",
        stream=True,
    )
    async for _chunk in stream:
        pass

    (message,) = messages(captured, sc.GEN_AI_OUTPUT_MESSAGES)
    assert message["parts"] == [{"type": "text", "content": "Hello there."}]
