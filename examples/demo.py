"""A small app that calls LLMs through LiteLLM: no API key needed, every reply is mocked.

Run it under zero-code instrumentation (see README):

    make demo

Each call becomes a span with tokens and cost; the spend summary prints at exit. The mocked
replies come from LiteLLM's ``mock_response``, so the calls are priced from LiteLLM's price
map exactly as real ones would be, but nothing leaves the machine.
"""

from __future__ import annotations

import asyncio

import litellm

# Bound before any instrumentation of ours runs in this file: zero-code instrumentation patches
# LiteLLM before the app is imported, so this name is instrumented too.
from litellm import completion

QUESTION = [{"role": "user", "content": "In one sentence, why do LLM bills surprise people?"}]
ANSWER = "Because every token in and out is billed, and tokens add up faster than people expect."


def chat() -> None:
    for team in ("search", "support"):
        completion(
            model="gpt-4o-mini",
            messages=QUESTION,
            mock_response=ANSWER,
            user="user-42",
            metadata={"team": team},
        )


def stream_with_usage() -> None:
    stream = completion(
        model="claude-haiku-4-5",
        custom_llm_provider="anthropic",
        messages=QUESTION,
        mock_response=ANSWER,
        stream=True,
        stream_options={"include_usage": True},
    )
    for _chunk in stream:
        pass


def embed() -> None:
    litellm.embedding(
        model="text-embedding-3-small", input=["spend", "budget"], mock_response=[0.1, 0.2]
    )


def unpriced() -> None:
    # A fine-tune nobody priced: reported as unpriced, never as free.
    completion(
        model="my-org/support-finetune-v2",
        custom_llm_provider="openai",
        messages=QUESTION,
        mock_response=ANSWER,
    )


async def async_calls() -> None:
    await asyncio.gather(
        *(
            litellm.acompletion(
                model="gpt-4o-mini", messages=QUESTION, mock_response=ANSWER, max_tokens=64
            )
            for _ in range(2)
        )
    )
    stream = await litellm.acompletion(
        model="gpt-4o-mini", messages=QUESTION, mock_response=ANSWER, stream=True
    )
    async for _chunk in stream:  # no usage on the stream: tokens are counted locally
        pass


def main() -> None:
    chat()
    stream_with_usage()
    embed()
    unpriced()
    asyncio.run(async_calls())
    print("demo: 8 LLM calls made; their spans and the spend summary follow.")


if __name__ == "__main__":
    main()
