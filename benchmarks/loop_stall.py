"""How long spendmeter holds the event loop at the end of an async stream without usage, and
before an async call under a reserving budget: a task ticks every millisecond while the call
runs; the longest gap between two ticks is the stall.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python benchmarks/loop_stall.py [--mb 1 2 5]

Bare LiteLLM is measured the same way, in the same process before instrumenting.
Only the public API is used, so the same script measures any revision.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from litellm import CustomLLM
from litellm.types.utils import GenericStreamingChunk
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from spendmeter import BudgetSpanProcessor, LiteLLMInstrumentor

# A provider of the script's own, priced as gpt-4o-mini: LiteLLM's mock_response counts the
# prompt itself, which would hide what spendmeter adds.
MODEL = "stall/gpt-4o-mini"
BASE_MODEL = "gpt-4o-mini"


class UsagelessProvider(CustomLLM):
    """Answers at once, and streams twenty chunks without usage."""

    def completion(self, *args: Any, **kwargs: Any) -> litellm.ModelResponse:
        return litellm.ModelResponse(
            model=BASE_MODEL,
            choices=[{"index": 0, "finish_reason": "stop", "message": {"content": "ok"}}],
            usage={"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        )

    async def acompletion(self, *args: Any, **kwargs: Any) -> litellm.ModelResponse:
        return self.completion()

    async def astreaming(self, *args: Any, **kwargs: Any) -> Any:
        for index in range(20):
            chunk: GenericStreamingChunk = {
                "text": f"word{index} ",
                "is_finished": index == 19,
                "finish_reason": "stop" if index == 19 else "",
                "usage": None,
                "index": 0,
                "tool_use": None,
            }
            yield chunk


async def longest_gap(work: Callable[[], Awaitable[Any]]) -> float:
    """The longest time between two ticks of a 1 ms heartbeat while ``work`` runs, in ms."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.005)
    try:
        await work()
    finally:
        await asyncio.sleep(0.005)
        done.set()
        await ticking
    return max(gaps) * 1e3


def stream(acompletion: Any, prompt: str) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        messages = [{"role": "user", "content": prompt}]
        response = await acompletion(
            model=MODEL, messages=messages, stream=True, base_model=BASE_MODEL
        )
        async for _ in response:
            pass

    return work


def plain(acompletion: Any, prompt: str) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        messages = [{"role": "user", "content": prompt}]
        await acompletion(model=MODEL, messages=messages, max_tokens=10, base_model=BASE_MODEL)

    return work


async def measure(runs: int, sizes: list[float]) -> dict[tuple[float, str], list[float]]:
    found = {}
    for mb in sizes:
        prompt = "spend " * int(mb * 1e6 / 6)
        for name, make in (("usage-less stream", stream), ("reserve=True call", plain)):
            await make(litellm.acompletion, "warm up")()
            found[mb, name] = [
                await longest_gap(make(litellm.acompletion, prompt)) for _ in range(runs)
            ]
    return found


def instrument() -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BudgetSpanProcessor(1e9, reserve=True, raise_on_budget=True))
    LiteLLMInstrumentor().instrument(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, nargs="+", default=[1, 2, 5])
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    litellm.custom_provider_map = [{"provider": "stall", "custom_handler": UsagelessProvider()}]
    litellm.utils.custom_llm_setup()
    # Bare first: once instrumented, even the original function reaches patched LiteLLM
    # internals.
    bare = await measure(options.runs, options.mb)
    instrument()
    instrumented = await measure(options.runs, options.mb)
    for key, gaps in bare.items():
        mb, name = key
        print(
            f"{mb:g} MB {name}: longest gap, median of {options.runs}: "
            f"bare {statistics.median(gaps):.1f} ms (max {max(gaps):.1f}), "
            f"spendmeter {statistics.median(instrumented[key]):.1f} ms "
            f"(max {max(instrumented[key]):.1f})"
        )


if __name__ == "__main__":
    asyncio.run(main())
