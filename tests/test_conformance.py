"""Conformance: over LiteLLM's price map, the cost on a span is LiteLLM's own figure for the call.

Every chat, completion, responses and embedding model of ``litellm.model_cost`` that has a price
field, at the standard tier and at each of ``priority``/``flex`` its entry prices, with usage
shapes that reach each priced dimension (cache reads and writes, reasoning, a prompt above the
entry's long-context threshold, audio), called through the instrumented ``litellm.completion``
(plain, streamed with usage, streamed without) or ``litellm.embedding`` with ``mock_response``.
The expected figure is ``litellm.completion_cost`` on the returned response (or the stream
assembled by ``litellm.stream_chunk_builder``) with the same tier; the parts must add up to it.

By default a fixed-seed sample of models runs (CI: seconds); ``SPENDMETER_CONFORMANCE=full``
(``make conformance``) runs the whole map. Each test prints how many models and calls it checked.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import litellm
import pytest
from litellm import Usage

from spendmeter import semconv as sc
from spendmeter._litellm import prices_anything
from tests._support import COST_PARTS, MESSAGES, Telemetry, answer

# A sweep over LiteLLM's price map: in `make test`, not in the fast `make check`.
pytestmark = pytest.mark.slow

FULL = os.environ.get("SPENDMETER_CONFORMANCE") == "full"
SAMPLE = int(os.environ.get("SPENDMETER_CONFORMANCE_SAMPLE", "25"))
SEED = 11
REL = 1e-9
TIERS = ("priority", "flex")
ANSWER = "The price, to the dollar."
_THRESHOLD = re.compile(r"_above_(\d+)k_tokens")


@dataclass(frozen=True)
class Model:
    key: str
    provider: str
    entry: Mapping[str, Any]

    def per_second(self) -> bool:
        return any("cost_per_second" in key for key in self.entry)

    def tiers(self) -> tuple[str | None, ...]:
        priced = tuple(t for t in TIERS if any(k.endswith(f"_{t}") for k in self.entry))
        return (None, *priced)


@dataclass
class Tally:
    models: set[str] = field(default_factory=set)
    calls: int = 0
    not_callable: int = 0
    refusals: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    def report(self, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
        with capsys.disabled():
            print(
                f"\nconformance [{kind}]: {len(self.models)} models, {self.calls} calls, "
                f"{len(self.differences)} differences, {self.not_callable} not callable by LiteLLM"
            )
            if os.environ.get("SPENDMETER_CONFORMANCE_VERBOSE"):
                print("\n".join(sorted(set(self.refusals))))
        assert not self.differences, "\n".join(self.differences[:20])


def map_models(modes: tuple[str, ...]) -> list[Model]:
    found = []
    for key, entry in sorted(litellm.model_cost.items()):
        if not isinstance(entry, dict) or entry.get("mode") not in modes:
            continue
        provider = entry.get("litellm_provider")
        if isinstance(provider, str) and prices_anything(key, provider):
            found.append(Model(key, provider, entry))
    if FULL or len(found) <= SAMPLE:
        return found
    return random.Random(SEED).sample(found, SAMPLE)


def usage_shapes(model: Model) -> Iterator[tuple[str, Usage]]:
    yield "plain", Usage(prompt_tokens=1200, completion_tokens=300, total_tokens=1500)
    yield (
        "cache",
        Usage(
            prompt_tokens=3000,
            completion_tokens=200,
            total_tokens=3200,
            cache_read_input_tokens=1500,
            cache_creation_input_tokens=600,
        ),
    )
    yield (
        "reasoning",
        Usage(
            prompt_tokens=800,
            completion_tokens=1600,
            total_tokens=2400,
            completion_tokens_details={"reasoning_tokens": 1200},
        ),
    )
    thresholds = [int(m.group(1)) * 1000 for k in model.entry if (m := _THRESHOLD.search(k))]
    if thresholds:
        prompt = max(thresholds) + 5000
        yield (
            "long context",
            Usage(
                prompt_tokens=prompt,
                completion_tokens=400,
                total_tokens=prompt + 400,
                prompt_tokens_details={"cached_tokens": 2000},
            ),
        )
    if any("audio" in k for k in model.entry):
        yield (
            "audio",
            Usage(
                prompt_tokens=900,
                completion_tokens=700,
                total_tokens=1600,
                prompt_tokens_details={"audio_tokens": 500},
                completion_tokens_details={"audio_tokens": 400},
            ),
        )


def expected_cost(response: Any, model: Model, tier: str | None) -> float | None:
    hidden = getattr(response, "_hidden_params", None) or {}
    if model.per_second() and hidden.get("response_cost") is not None:
        return hidden["response_cost"]  # the duration it was billed for is LiteLLM's alone
    try:
        # The provider LiteLLM routes the call to, which is not always the map entry's own.
        _, provider, _, _ = litellm.get_llm_provider(model.key, custom_llm_provider=model.provider)
        return litellm.completion_cost(
            completion_response=response,
            custom_llm_provider=provider,
            service_tier=tier,
            **location_kwargs(model),
        )
    except Exception:  # LiteLLM cannot price it: spendmeter must say unpriced
        return None


def check(
    tally: Tally, telemetry: Telemetry, label: str, expected: float | None, status: str
) -> None:
    spans = telemetry.spans()
    telemetry.exporter.clear()
    if len(spans) != 1:
        tally.differences.append(f"{label}: {len(spans)} spans")
        return
    attributes = spans[0].attributes
    tally.calls += 1
    cost = attributes.get(sc.GEN_AI_USAGE_COST)
    if expected is None:
        if cost is not None:
            tally.differences.append(f"{label}: LiteLLM cannot price it, spendmeter says {cost}")
        return
    if cost is None or abs(cost - expected) > REL * max(abs(expected), 1e-300):
        tally.differences.append(f"{label}: spendmeter {cost}, LiteLLM {expected}")
        return
    if attributes[sc.SPENDMETER_PRICING_STATUS] != status:
        tally.differences.append(f"{label}: status {attributes[sc.SPENDMETER_PRICING_STATUS]}")
    parts = [attributes[key] for key in COST_PARTS]
    if min(parts) < 0 or abs(sum(parts) - cost) > 1e-12 * max(cost, 1e-300):
        tally.differences.append(f"{label}: parts {parts} do not add up to {cost}")


def run_calls(
    tally: Tally,
    telemetry: Telemetry,
    models: list[Model],
    call: Callable[[Model, Usage, str | None], tuple[Any, str]],
) -> None:
    for model in models:
        for shape, usage in usage_shapes(model):
            for tier in model.tiers():
                try:
                    priced, status = call(model, usage, tier)
                except Exception as error:  # LiteLLM itself refuses the call
                    tally.not_callable += 1
                    tally.refusals.append(f"{model.key} [{model.provider}]: {error!r:.120}")
                    telemetry.exporter.clear()
                    continue
                tally.models.add(model.key)
                label = f"{model.key} [{model.provider}] {shape} tier={tier}"
                check(tally, telemetry, label, expected_cost(priced, model, tier), status)


def tier_kwargs(tier: str | None) -> dict[str, Any]:
    return {} if tier is None else {"service_tier": tier}


# LiteLLM prices a Vertex AI call at the location it went to (a regional endpoint costs the
# entry's regional_endpoint_uplift_multiplier more than the global one), us-central1 when the
# call names none, which completion_cost on the response alone does not know: so every Vertex
# AI call names its location, and the expected figure is priced there too.
VERTEX_LOCATION = "us-east5"


def location_kwargs(model: Model) -> dict[str, Any]:
    return {"vertex_location": VERTEX_LOCATION} if model.provider.startswith("vertex_ai") else {}


CHAT_MODES = ("chat", "completion", "responses")


def test_plain_calls_cost_what_litellm_says(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    def call(model: Model, usage: Usage, tier: str | None) -> tuple[Any, str]:
        response = litellm.completion(
            model=model.key,
            custom_llm_provider=model.provider,
            messages=MESSAGES,
            mock_response=answer(model.key, usage, content=ANSWER),
            **tier_kwargs(tier),
        )
        return response, sc.PRICING_PRICED

    tally = Tally()
    run_calls(tally, telemetry, map_models(CHAT_MODES), call)
    tally.report("plain", capsys)


def test_streams_with_usage_cost_what_litellm_says(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    def call(model: Model, usage: Usage, tier: str | None) -> tuple[Any, str]:
        chunks = list(
            litellm.completion(
                model=model.key,
                custom_llm_provider=model.provider,
                messages=MESSAGES,
                mock_response=answer(model.key, usage, content=ANSWER),
                stream=True,
                stream_options={"include_usage": True},
                **tier_kwargs(tier),
                **location_kwargs(model),
            )
        )
        if model.per_second():
            # Billed by the call's wall-clock time, which only LiteLLM's own figure saw.
            return chunks[-1], sc.PRICING_PRICED
        return litellm.stream_chunk_builder(chunks, messages=MESSAGES), sc.PRICING_PRICED

    tally = Tally()
    run_calls(tally, telemetry, map_models(CHAT_MODES), call)
    tally.report("stream with usage", capsys)


def test_streams_without_usage_are_estimated_as_litellm_counts_them(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    def call(model: Model, usage: Usage, tier: str | None) -> tuple[Any, str]:
        chunks = list(
            litellm.completion(
                model=model.key,
                custom_llm_provider=model.provider,
                messages=MESSAGES,
                mock_response=answer(model.key, usage, content=ANSWER),
                stream=True,
                **tier_kwargs(tier),
                **location_kwargs(model),
            )
        )
        return litellm.stream_chunk_builder(chunks, messages=MESSAGES), sc.PRICING_ESTIMATED

    tally = Tally()
    run_calls(tally, telemetry, map_models(CHAT_MODES), call)
    tally.report("stream without usage", capsys)


def test_embeddings_cost_what_litellm_says(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = Tally()
    for model in map_models(("embedding",)):
        try:
            response = litellm.embedding(
                model=model.key,
                custom_llm_provider=model.provider,
                input=["what does this cost", "and this"],
                mock_response=[0.1, 0.2, 0.3],
                **location_kwargs(model),
            )
        except Exception:  # LiteLLM itself refuses the call: nothing to compare
            tally.not_callable += 1
            telemetry.exporter.clear()
            continue
        tally.models.add(model.key)
        expected = expected_cost(response, model, None)
        check(tally, telemetry, f"{model.key} [{model.provider}]", expected, sc.PRICING_PRICED)
    tally.report("embedding", capsys)
