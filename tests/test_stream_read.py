"""The read of a stream's chunks at its end: LiteLLM's chat chunks are read in C loops, any
other chunks field by field, and both reads record the same telemetry."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import litellm
import pytest
from litellm.types.utils import ModelResponseStream, StreamingChoices

from spendmeter import semconv as sc
from spendmeter._streams import _Seen
from tests._support import Telemetry, chat

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
USAGE = {"stream_options": {"include_usage": True}}
STREAMS = {
    "with usage": USAGE,
    "without usage": {},
    "two choices": {"n": 2, **USAGE},
    "a tool call": {"mock_tool_calls": [TOOL_CALL], **USAGE},
}
# Differ from one call to the next.
UNSTABLE = {sc.GEN_AI_RESPONSE_ID, sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK}


def _must_not_run(*_args: Any) -> None:
    raise AssertionError("LiteLLM's chat chunks were read field by field")


def _recorded(telemetry: Telemetry, ask: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """One stream's span attributes and metric points, on a pipeline of its own."""
    list(chat(stream=True, **ask))
    [span] = telemetry.spans()
    attributes = {k: v for k, v in span.attributes.items() if k not in UNSTABLE}
    points = [
        (dict(point.attributes), point.value if hasattr(point, "value") else point.sum)
        for metric in (sc.METRIC_TOKEN_USAGE, sc.METRIC_COST)
        for point in telemetry.points(metric)
    ]
    return attributes, sorted(points, key=str)


@pytest.mark.parametrize("ask", list(STREAMS.values()), ids=list(STREAMS))
def test_litellms_chat_chunks_read_quickly_record_what_a_field_by_field_read_does(
    instrument: Any, make_telemetry: Any, monkeypatch: pytest.MonkeyPatch, ask: dict[str, Any]
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(_Seen, "_read_any_chunks", _must_not_run)
        quick = _recorded(instrument(make_telemetry()), ask)
    with monkeypatch.context() as patched:
        # As with a LiteLLM whose chunk class the quick read does not know.
        patched.setattr("spendmeter._streams._chat_chunk_type", lambda: None)
        by_field = _recorded(instrument(make_telemetry()), ask)

    assert quick == by_field
    attributes, points = quick
    assert attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attributes[sc.GEN_AI_USAGE_COST] > 0
    assert len(points) == 3  # input and output tokens, cost


def _chunk(**fields: Any) -> ModelResponseStream:
    return ModelResponseStream(id="chunk-1", model="gpt-4o-mini", **fields)


# Chunks of LiteLLM's chat class made without its __init__ (`model_construct`), each in a way
# the quick read does not expect; the finish reasons and the response id a field-by-field
# read finds in a stream that has one of them between two usual chunks.
BUILT_ANOTHER_WAY = {
    "a choice without a finish reason": (
        {"choices": [StreamingChoices.model_construct(index=0)]},
        [],
        "chunk-1",
    ),
    "a choice of another kind": (
        {"choices": [SimpleNamespace(index=0, finish_reason="length")]},
        ["length"],
        "chunk-1",
    ),
    "no choices": ({"choices": None}, [], "chunk-1"),
    "a Responses API event's type": (
        {"choices": [], "type": "response.completed", "response": {"id": "resp-1"}},
        [],
        "resp-1",
    ),
}


@pytest.mark.parametrize(
    ("fields", "reasons", "response_id"),
    list(BUILT_ANOTHER_WAY.values()),
    ids=list(BUILT_ANOTHER_WAY),
)
def test_chat_chunks_built_another_way_are_read_field_by_field(
    fields: dict[str, Any], reasons: list[str], response_id: str
) -> None:
    usage = litellm.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    seen = _Seen(iter(()))
    seen.chunks = [
        _chunk(choices=[StreamingChoices(index=0, delta={"content": "hi"})]),
        ModelResponseStream.model_construct(id="chunk-2", **fields),
        _chunk(choices=[StreamingChoices(index=0)], usage=usage),
    ]

    seen.read()

    assert seen.finish_reasons == reasons
    assert seen.usage == usage
    assert (seen.response_id, seen.response_model) == (response_id, "gpt-4o-mini")


def test_a_streamed_text_completion_is_priced_from_its_usage(telemetry: Telemetry) -> None:
    chunks = list(
        litellm.text_completion(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hi",
            mock_response="hello there",
            stream=True,
            **USAGE,
        )
    )

    attributes = telemetry.span().attributes
    [usage] = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == usage.prompt_tokens
    assert attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.completion_tokens
    assert attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_PRICED
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(usage.cost, rel=1e-12)
