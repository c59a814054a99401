"""spendmeter's own token counts: with LiteLLM's counter, never a download, bounded in size.

LiteLLM picks a tokenizer by model name, and for some (Llama 2 and 3, Cohere's command-r) it
fetches one from the Hugging Face hub on first use: offline, that first count waits ~24 s on
retries, and LiteLLM keeps retrying in the background later. spendmeter counts those models with
LiteLLM's default local tokenizer (tiktoken) instead, the one LiteLLM itself falls back to when
the hub cannot be reached; every other model is counted exactly as LiteLLM counts it.

A count costs ~0.1 s per million characters. Past ``COUNT_LIMIT_CHARS`` the text is not
tokenized: it is counted as characters / 4, rounded up (about what English text averages).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import litellm

# Counted inline below this many characters, even on an event loop: ~1 ms of tokenizer time,
# about what handing the count to a worker thread and back costs the loop.
INLINE_CHARS = 8_192
# Past this many characters (~0.25 s of tokenizer time), the rough count below is used.
COUNT_LIMIT_CHARS = 2_000_000
CHARS_PER_TOKEN = 4

# LiteLLM's names for the tokenizers it downloads (the Anthropic and DeepSeek ones ship with it).
_HUB_TOKENIZERS = frozenset({"cohere", "llama2", "llama3"})


def rough_tokens(chars: int) -> int:
    """The cheap count: characters / 4, rounded up."""
    return -(-chars // CHARS_PER_TOKEN)


def chars(value: Any, depth: int = 0) -> int:
    """The characters of every string in a prompt (messages, their parts, tool calls, tools):
    what a count of it costs is in proportion, and what the rough count counts."""
    if isinstance(value, str):
        return len(value)
    if depth > 8:  # messages nest a few levels at most; no pathological structure walks far
        return 0
    if isinstance(value, Mapping):
        return sum(chars(item, depth + 1) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(chars(item, depth + 1) for item in value)
    fields = getattr(value, "__dict__", None)  # LiteLLM's Message objects sent back as history
    return chars(fields, depth + 1) if isinstance(fields, dict) else 0


def prompt_chars(params: Mapping[str, Any]) -> int:
    return chars(_prompt_of(params)) + chars(params.get("tools"))


def _prompt_of(params: Mapping[str, Any]) -> Any:
    messages = params.get("messages")
    return messages if messages is not None else params.get("prompt", params.get("input"))


def prompt_tokens(model: str, params: Mapping[str, Any]) -> int | None:
    """The call's prompt counted locally (messages with their tools, a prompt or an input),
    roughly past ``COUNT_LIMIT_CHARS``; ``None`` when there is nothing to count."""
    size = prompt_chars(params)
    if size > COUNT_LIMIT_CHARS:
        return rough_tokens(size)
    messages = params.get("messages")
    if messages:
        return count_messages(model, messages, params.get("tools"), params.get("tool_choice"))
    text = _prompt_of(params)  # text completions, embeddings
    texts = [text] if isinstance(text, str) else text
    if isinstance(texts, (list, tuple)) and texts and all(isinstance(item, str) for item in texts):
        return sum(count_text(model, item) for item in texts)
    return None


def count_messages(model: str, messages: Any, tools: Any = None, tool_choice: Any = None) -> int:
    return int(
        litellm.token_counter(
            model=model,
            custom_tokenizer=local_tokenizer(model),
            messages=messages,
            tools=tools,
            tool_choice=tool_choice,
            use_default_image_token_count=True,  # never fetch an image to count its tokens
        )
    )


def count_text(model: str, text: str, *, response: bool = False) -> int:
    return int(
        litellm.token_counter(
            model=model,
            custom_tokenizer=local_tokenizer(model),
            text=text,
            count_response_tokens=response,
        )
    )


def downloads_tokenizer(model: str) -> bool:
    """Whether LiteLLM would fetch this model's tokenizer from the Hugging Face hub."""
    return local_tokenizer(model) is not None


@lru_cache(maxsize=1024)
def local_tokenizer(model: str) -> dict[str, Any] | None:
    """The tokenizer to pass LiteLLM for ``model``: its default local one where LiteLLM would
    download one, else ``None`` (LiteLLM's own choice)."""
    if _hub_tokenizer_kind(model) not in _HUB_TOKENIZERS:
        return None
    from litellm.litellm_core_utils.default_encoding import encoding

    return {"type": "openai_tokenizer", "tokenizer": encoding}


def _hub_tokenizer_kind(model: str) -> str | None:
    kind_of = getattr(litellm.utils, "huggingface_tokenizer_kind", None)
    if kind_of is not None:
        return kind_of(model)  # type: ignore[no-any-return]
    # LiteLLM before 1.110 chose by these names in `_select_tokenizer_helper`.
    name = model.lower()
    if "command-r" in name and model in litellm.cohere_models:
        return "cohere"
    if "llama-2" in name or "replicate" in name:
        return "llama2"
    return "llama3" if "llama-3" in name else None
