"""token_usage: token counts out of every usage shape LiteLLM hands back, and never a crash or a
negative number out of a malformed one."""

from __future__ import annotations

from typing import Any

import litellm
import pytest
from litellm import EmbeddingResponse, ModelResponse, Usage
from litellm.types.llms.openai import ResponseAPIUsage

from spendmeter._usage import TokenUsage, token_usage
from tests._support import MESSAGES


def anthropic_usage(raw: dict[str, Any]) -> Usage:
    """What LiteLLM makes of an Anthropic response's usage block."""
    return litellm.AnthropicConfig().calculate_usage(usage_object=raw, reasoning_content=None)


def test_openai_usage_with_cached_reasoning_and_audio_tokens() -> None:
    usage = Usage(
        prompt_tokens=1200,
        completion_tokens=400,
        total_tokens=1600,
        prompt_tokens_details={"cached_tokens": 1024, "audio_tokens": 50, "image_tokens": 30},
        completion_tokens_details={"reasoning_tokens": 250, "audio_tokens": 20, "image_tokens": 5},
    )

    assert token_usage(usage) == TokenUsage(
        input_tokens=1200,
        output_tokens=400,
        cache_read_tokens=1024,
        reasoning_tokens=250,
        input_audio_tokens=50,
        output_audio_tokens=20,
        input_image_tokens=30,
        output_image_tokens=5,
    )


def test_anthropic_usage_counts_cache_tokens_in_the_input() -> None:
    usage = anthropic_usage(
        {
            "input_tokens": 100,
            "output_tokens": 50,
            "cache_read_input_tokens": 2000,
            "cache_creation_input_tokens": 500,
            "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300},
        }
    )

    assert token_usage(usage) == TokenUsage(
        input_tokens=2600,
        output_tokens=50,
        cache_read_tokens=2000,
        cache_write_tokens=500,
        cache_write_1h_tokens=300,
    )


def test_usage_built_with_anthropic_cache_fields() -> None:
    usage = Usage(
        prompt_tokens=1200,
        completion_tokens=300,
        total_tokens=1500,
        cache_creation_input_tokens=200,
        cache_read_input_tokens=800,
    )

    found = token_usage(usage)

    assert found is not None
    assert (found.input_tokens, found.cache_read_tokens, found.cache_write_tokens) == (
        1200,
        800,
        200,
    )


def test_deepseek_cache_hits_are_cache_reads() -> None:
    found = token_usage(
        {"prompt_tokens": 900, "completion_tokens": 10, "prompt_cache_hit_tokens": 600}
    )

    assert found is not None
    assert found.cache_read_tokens == 600


def test_a_dict_reads_like_the_usage_object_it_describes() -> None:
    shape: dict[str, Any] = {
        "prompt_tokens": 300,
        "completion_tokens": 120,
        "total_tokens": 420,
        "prompt_tokens_details": {"cached_tokens": 128, "cache_creation_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 80},
    }

    assert token_usage(shape) == token_usage(Usage(**shape))
    assert token_usage(shape) == TokenUsage(
        input_tokens=300,
        output_tokens=120,
        cache_read_tokens=128,
        cache_write_tokens=64,
        reasoning_tokens=80,
    )


def test_a_private_cache_count_fills_in_when_nothing_else_says() -> None:
    usage = Usage(prompt_tokens=500, completion_tokens=5, total_tokens=505)
    usage._cache_creation_input_tokens = 120
    usage._cache_read_input_tokens = 300

    found = token_usage(usage)

    assert found is not None
    assert (found.cache_read_tokens, found.cache_write_tokens) == (300, 120)


def test_usage_of_a_mocked_completion() -> None:
    response = litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="hi")

    found = token_usage(response.usage)

    assert found is not None
    assert found.input_tokens == response.usage.prompt_tokens > 0
    assert found.output_tokens == response.usage.completion_tokens > 0


def test_usage_of_an_embedding() -> None:
    response = EmbeddingResponse(
        model="text-embedding-3-small", usage=Usage(prompt_tokens=37, total_tokens=37)
    )

    assert token_usage(response.usage) == TokenUsage(input_tokens=37)


def test_usage_of_a_stream_chunk() -> None:
    chunks = list(
        litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="a streamed answer",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]

    found = token_usage(getattr(last, "usage", None))

    assert found is not None
    assert found.input_tokens == last.usage.prompt_tokens > 0
    assert found.output_tokens == last.usage.completion_tokens > 0


def test_responses_api_usage_includes_cached_tokens_in_the_input() -> None:
    usage = ResponseAPIUsage(
        input_tokens=900,
        output_tokens=300,
        total_tokens=1200,
        input_tokens_details={"cached_tokens": 512},
        output_tokens_details={"reasoning_tokens": 200},
    )

    assert token_usage(usage) == TokenUsage(
        input_tokens=900, output_tokens=300, cache_read_tokens=512, reasoning_tokens=200
    )


def test_raw_anthropic_usage_adds_cache_tokens_to_the_input() -> None:
    raw = {
        "input_tokens": 10,
        "output_tokens": 40,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 300},
    }

    assert token_usage(raw) == token_usage(anthropic_usage(raw))


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {},
        {"total_tokens": 12},
        {"prompt_tokens": None, "completion_tokens": None},
        {"prompt_tokens": "abc", "completion_tokens": [3]},
        {"input_tokens": None},
        "12 tokens",
        42,
        object(),
        ModelResponse(model="gpt-4o-mini").choices,
    ],
    ids=repr,
)
def test_no_usage_at_all_is_none(usage: object) -> None:
    assert token_usage(usage) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        ("12", 12),
        (" 12 ", 12),
        ("12.9", 12),
        (12.9, 12),
        (-5, 0),
        ("-5", 0),
        (-0.5, 0),
        ("abc", 0),
        (None, 0),
        (True, 0),
        (float("nan"), 0),
        (float("inf"), 0),
        ("1e400", 0),
        ({"nested": 1}, 0),
    ],
    ids=repr,
)
def test_a_malformed_count_reads_as_zero_or_a_clean_number(value: object, expected: int) -> None:
    found = token_usage(
        {
            "prompt_tokens": 1,
            "completion_tokens": value,
            "prompt_tokens_details": {"cached_tokens": value},
            "completion_tokens_details": {"reasoning_tokens": value},
        }
    )

    assert found is not None
    assert found.output_tokens == found.cache_read_tokens == found.reasoning_tokens == expected


@pytest.mark.parametrize(
    "details",
    [None, "cached", 7, [1, 2], {"cached_tokens": -3, "audio_tokens": "x"}],
    ids=repr,
)
def test_malformed_details_are_ignored(details: object) -> None:
    found = token_usage(
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": details,
            "completion_tokens_details": details,
        }
    )

    assert found == TokenUsage(input_tokens=10, output_tokens=5)


def test_no_field_is_ever_negative() -> None:
    everything_negative: dict[str, Any] = {
        "prompt_tokens": -100,
        "completion_tokens": -1,
        "cache_read_input_tokens": -7,
        "cache_creation_input_tokens": "-9",
        "prompt_tokens_details": {
            "audio_tokens": -2,
            "image_tokens": -2.5,
            "cache_creation_token_details": {"ephemeral_1h_input_tokens": -4},
        },
        "completion_tokens_details": {"reasoning_tokens": -3, "audio_tokens": -1},
    }

    found = token_usage(everything_negative)

    assert found is not None
    assert all(value == 0 for value in found)
