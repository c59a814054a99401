"""Token counts out of LiteLLM usage objects: pure, defensive, and fast.

This runs on every LLM call, so it reads plain fields and never validates or dumps a pydantic
model. Whatever the provider sent, malformed counts become 0 (or "unknown"), never an
exception and never a negative number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from spendmeter._fields import fields as fields_of
from spendmeter._fields import privates
from spendmeter._numbers import count

_NOTHING: Mapping[str, object] = {}
# Counts of a kind that some providers put beside prompt_tokens, outside the details.
_TOP_LEVEL_KINDS = frozenset(
    {
        "cache_read_input_tokens",
        "prompt_cache_hit_tokens",
        "cache_creation_input_tokens",
        "reasoning_tokens",
    }
)


class TokenUsage(NamedTuple):  # a tuple: made on every call, and cheaper to make than a dataclass
    """Tokens of one call, in the shape of LiteLLM's ``Usage``.

    ``input_tokens`` counts every prompt token, cached and cache-written ones included (what
    OpenAI calls ``prompt_tokens``); ``output_tokens`` counts every completion token, reasoning
    included. The other fields say how many of those were of a kind priced differently.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    # The part of cache_write_tokens that Anthropic caches for one hour, at a higher rate.
    cache_write_1h_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    input_image_tokens: int = 0
    output_image_tokens: int = 0


def token_usage(usage: object) -> TokenUsage | None:
    """Read the token counts of a LiteLLM usage (object or dict); ``None`` when there are none.

    Accepts LiteLLM's ``Usage`` (chat, text completion, embeddings, last stream chunk), a dict
    of the same shape, and the ``input_tokens``/``output_tokens`` shapes of the Responses API
    and of raw Anthropic usage.
    """
    fields = fields_of(usage)
    if fields is None:
        return None
    if "prompt_tokens" in fields or "completion_tokens" in fields:
        return _chat_usage(fields, usage)
    if "input_tokens" in fields or "output_tokens" in fields:
        return _input_output_usage(fields)
    return None


def _chat_usage(fields: Mapping[str, object], usage: object) -> TokenUsage | None:
    input_tokens = count(fields.get("prompt_tokens"))
    output_tokens = count(fields.get("completion_tokens"))
    if input_tokens is None and output_tokens is None:
        return None
    if (
        fields.get("prompt_tokens_details") is None
        and fields.get("completion_tokens_details") is None
        and _TOP_LEVEL_KINDS.isdisjoint(fields)
    ):
        # Most calls: no details, and what was cached only in LiteLLM's private attributes.
        read, written = _private_cache_counts(usage)
        return TokenUsage(input_tokens or 0, output_tokens or 0, read, written)
    prompt = _details(fields.get("prompt_tokens_details"))
    completion = _details(fields.get("completion_tokens_details"))
    # Precedence follows LiteLLM's Usage(): Anthropic's top-level counts, then DeepSeek's,
    # then the OpenAI details; the private attributes only fill in for odd hand-built objects.
    cache_read = _first(
        fields.get("cache_read_input_tokens"),
        fields.get("prompt_cache_hit_tokens"),
        prompt.get("cached_tokens"),
    )
    cache_write = _first(
        fields.get("cache_creation_input_tokens"),
        prompt.get("cache_write_tokens"),
        prompt.get("cache_creation_tokens"),
        prompt.get("cache_creation_input_tokens"),
    )
    if cache_read is None or cache_write is None:
        private_read, private_write = _private_cache_counts(usage)
        cache_read = private_read if cache_read is None else cache_read
        cache_write = private_write if cache_write is None else cache_write
    reasoning = _first(completion.get("reasoning_tokens"), fields.get("reasoning_tokens"))
    usage_counts = TokenUsage(
        input_tokens or 0, output_tokens or 0, cache_read, cache_write, reasoning or 0
    )
    if prompt is _NOTHING and completion is _NOTHING:
        return usage_counts  # most calls: no per-modality details to read
    return usage_counts._replace(
        cache_write_1h_tokens=_one_hour_writes(
            fields_of(prompt.get("cache_creation_token_details"))
        ),
        input_audio_tokens=count(prompt.get("audio_tokens")) or 0,
        output_audio_tokens=count(completion.get("audio_tokens")) or 0,
        input_image_tokens=count(prompt.get("image_tokens")) or 0,
        output_image_tokens=count(completion.get("image_tokens")) or 0,
    )


def _input_output_usage(fields: Mapping[str, object]) -> TokenUsage | None:
    input_tokens = count(fields.get("input_tokens"))
    output_tokens = count(fields.get("output_tokens"))
    if input_tokens is None and output_tokens is None:
        return None
    input_details = fields_of(fields.get("input_tokens_details")) or _NOTHING
    output_details = fields_of(fields.get("output_tokens_details")) or _NOTHING
    anthropic_read = count(fields.get("cache_read_input_tokens"))
    anthropic_write = count(fields.get("cache_creation_input_tokens"))
    if anthropic_read is None and anthropic_write is None:
        # Responses API: input_tokens already includes the cached ones.
        cache_read = count(input_details.get("cached_tokens")) or 0
        cache_write = 0
        total_input = input_tokens or 0
    else:
        # Raw Anthropic: input_tokens excludes what was read from or written to the cache.
        cache_read = anthropic_read or 0
        cache_write = anthropic_write or 0
        total_input = (input_tokens or 0) + cache_read + cache_write
    return TokenUsage(
        input_tokens=total_input,
        output_tokens=output_tokens or 0,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=count(output_details.get("reasoning_tokens")) or 0,
        cache_write_1h_tokens=_one_hour_writes(fields_of(fields.get("cache_creation"))),
    )


def _details(details: object) -> Mapping[str, object]:
    return _NOTHING if details is None else fields_of(details) or _NOTHING


def _private_cache_counts(usage: object) -> tuple[int, int]:
    """The cache counts LiteLLM's ``Usage`` keeps privately: (read, written)."""
    found = privates(usage)
    if found is None:
        return 0, 0
    read = found.get("_cache_read_input_tokens")
    write = found.get("_cache_creation_input_tokens")
    if read == 0 and write == 0 and type(read) is int and type(write) is int:
        return 0, 0  # most calls: nothing cached
    return count(read) or 0, count(write) or 0


def _one_hour_writes(details: Mapping[str, object] | None) -> int:
    if details is None:
        return 0
    return count(details.get("ephemeral_1h_input_tokens")) or 0


def _first(*values: object) -> int | None:
    """The first value that is a usable count."""
    for value in values:
        if value is not None:
            found = count(value)
            if found is not None:
                return found
    return None
