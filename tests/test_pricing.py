"""Pricing: the cost of a call equals litellm.completion_cost for the same response, user
overrides win, LiteLLM's map is read as it stands at call time, and a model nobody priced is
unpriced, never free."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
from litellm import EmbeddingResponse, ModelResponse, Usage

from spendmeter._usage import TokenUsage, token_usage
from spendmeter.pricing import (
    Cost,
    Price,
    PriceResolver,
    PricingConfigError,
    compute_cost,
    load_overrides,
)
from tests.conftest import MESSAGES

Register = Callable[..., None]


def response(model: str, usage: Usage) -> ModelResponse:
    return ModelResponse(
        model=model,
        usage=usage,
        choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant"}}],
    )


def anthropic_usage(raw: dict[str, Any]) -> Usage:
    """What LiteLLM makes of an Anthropic response's usage block."""
    return litellm.AnthropicConfig().calculate_usage(usage_object=raw, reasoning_content=None)


def cost_of(price: Price | None, usage: Usage, duration_s: float | None = None) -> Cost:
    assert price is not None
    tokens = token_usage(usage)
    assert tokens is not None
    cost = compute_cost(price, tokens, duration_s=duration_s)
    parts = cost.input + cost.output + cost.cache_read + cost.cache_write
    assert parts == pytest.approx(cost.total, rel=1e-12)
    return cost


@pytest.fixture
def register() -> Iterator[Register]:
    """litellm.register_model for test-only models, removed from the map afterwards."""
    added: list[str] = []

    def _register(model: str, **entry: Any) -> None:
        litellm.register_model({model: entry}, persist_across_reloads=False)
        added.append(model)

    yield _register
    for model in added:
        litellm.model_cost.pop(model, None)
        litellm.open_ai_chat_completion_models.discard(model)


# --- equal to litellm.completion_cost ------------------------------------------------------

PARITY_CASES = {
    "openai chat with cached tokens": (
        "gpt-4o-mini",
        "openai",
        Usage(
            prompt_tokens=3000,
            completion_tokens=250,
            total_tokens=3250,
            prompt_tokens_details={"cached_tokens": 2048},
        ),
    ),
    "anthropic cache read and 5-minute write": (
        "claude-haiku-4-5",
        "anthropic",
        anthropic_usage(
            {
                "input_tokens": 40,
                "output_tokens": 300,
                "cache_read_input_tokens": 4000,
                "cache_creation_input_tokens": 1500,
                "cache_creation": {"ephemeral_5m_input_tokens": 1500},
            }
        ),
    ),
    "anthropic one-hour cache write": (
        "claude-sonnet-4-5",
        "anthropic",
        anthropic_usage(
            {
                "input_tokens": 12,
                "output_tokens": 80,
                "cache_read_input_tokens": 900,
                "cache_creation_input_tokens": 2500,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 500,
                    "ephemeral_1h_input_tokens": 2000,
                },
            }
        ),
    ),
    "reasoning model": (
        "o3-mini",
        "openai",
        Usage(
            prompt_tokens=700,
            completion_tokens=1800,
            total_tokens=2500,
            prompt_tokens_details={"cached_tokens": 256},
            completion_tokens_details={"reasoning_tokens": 1500},
        ),
    ),
    "reasoning tokens with their own rate": (
        "dashscope/qwen-turbo",
        "dashscope",
        Usage(
            prompt_tokens=800,
            completion_tokens=900,
            total_tokens=1700,
            completion_tokens_details={"reasoning_tokens": 600},
        ),
    ),
    "long-context rates above 200k tokens": (
        "gemini/gemini-2.5-pro",
        "gemini",
        Usage(
            prompt_tokens=250_000,
            completion_tokens=4000,
            total_tokens=254_000,
            prompt_tokens_details={"cached_tokens": 100_000},
        ),
    ),
    "audio tokens": (
        "gpt-4o-audio-preview-2024-12-17",
        "openai",
        Usage(
            prompt_tokens=600,
            completion_tokens=900,
            total_tokens=1500,
            prompt_tokens_details={"audio_tokens": 400},
            completion_tokens_details={"audio_tokens": 700},
        ),
    ),
    "image output tokens": (
        "gemini/gemini-2.5-flash-image",
        "gemini",
        Usage(
            prompt_tokens=300,
            completion_tokens=1400,
            total_tokens=1700,
            completion_tokens_details={"image_tokens": 1290},
        ),
    ),
    "fireworks default cache-read rate": (
        "fireworks_ai/accounts/fireworks/models/llama-v3p1-8b-instruct",
        "fireworks_ai",
        Usage(
            prompt_tokens=5000,
            completion_tokens=100,
            total_tokens=5100,
            prompt_tokens_details={"cached_tokens": 4000},
        ),
    ),
}


@pytest.mark.parametrize(("model", "provider", "usage"), PARITY_CASES.values(), ids=PARITY_CASES)
def test_cost_equals_litellm_completion_cost(model: str, provider: str, usage: Usage) -> None:
    expected = litellm.completion_cost(
        completion_response=response(model, usage), custom_llm_provider=provider
    )

    price = PriceResolver().resolve(model, provider)

    assert price is not None
    assert price.source == "litellm"
    assert expected > 0
    assert cost_of(price, usage).total == pytest.approx(expected, rel=1e-12)


def test_every_token_kind_at_its_own_rate_equals_litellm(register: Register) -> None:
    model = "spendmeter-test-multimodal"
    register(
        model,
        litellm_provider="openai",
        mode="chat",
        input_cost_per_token=1e-6,
        output_cost_per_token=4e-6,
        cache_read_input_token_cost=1e-7,
        cache_creation_input_token_cost=1.5e-6,
        input_cost_per_audio_token=7e-6,
        input_cost_per_image_token=3e-6,
        output_cost_per_audio_token=9e-6,
        output_cost_per_image_token=2e-5,
        output_cost_per_reasoning_token=6e-6,
    )
    usage = Usage(
        prompt_tokens=5000,
        completion_tokens=3000,
        total_tokens=8000,
        prompt_tokens_details={
            "cached_tokens": 1000,
            "cache_creation_tokens": 500,
            "audio_tokens": 700,
            "image_tokens": 900,
        },
        completion_tokens_details={
            "reasoning_tokens": 1200,
            "audio_tokens": 400,
            "image_tokens": 300,
        },
    )

    price = PriceResolver().resolve(model, "openai")

    expected = litellm.completion_cost(
        completion_response=response(model, usage), custom_llm_provider="openai"
    )
    assert cost_of(price, usage).total == pytest.approx(expected, rel=1e-12)


def test_cached_tokens_cost_less_than_fresh_ones() -> None:
    price = PriceResolver().resolve("gpt-4o-mini", "openai")
    fresh = Usage(prompt_tokens=3000, completion_tokens=250, total_tokens=3250)
    cached = PARITY_CASES["openai chat with cached tokens"][2]

    assert cost_of(price, cached).cache_read > 0
    assert cost_of(price, cached).total < cost_of(price, fresh).total


def test_anthropic_parts_split_reads_and_writes() -> None:
    price = PriceResolver().resolve("claude-haiku-4-5", "anthropic")
    usage = PARITY_CASES["anthropic cache read and 5-minute write"][2]

    cost = cost_of(price, usage)

    assert price is not None
    assert cost.input == pytest.approx(40 * price.rates.input)
    assert cost.cache_read == pytest.approx(4000 * price.rates.cache_read)
    assert cost.cache_write == pytest.approx(1500 * price.rates.cache_write)
    assert cost.output == pytest.approx(300 * price.rates.output)


def test_inconsistent_counts_are_clamped_never_billed_twice_or_below_zero() -> None:
    price = PriceResolver().resolve("claude-sonnet-4-5", "anthropic")
    assert price is not None
    rates = price.rates

    more_writes_in_1h_than_at_all = compute_cost(
        price, TokenUsage(input_tokens=100, cache_write_tokens=100, cache_write_1h_tokens=300)
    )
    more_cached_than_prompt = compute_cost(
        price, TokenUsage(input_tokens=10, cache_read_tokens=50, input_audio_tokens=40)
    )
    more_reasoning_than_output = compute_cost(
        price, TokenUsage(output_tokens=10, reasoning_tokens=25)
    )

    assert more_writes_in_1h_than_at_all.cache_write == pytest.approx(100 * rates.cache_write_1h)
    assert more_writes_in_1h_than_at_all.input == 0
    assert more_cached_than_prompt.input == 0
    assert more_cached_than_prompt.cache_read == pytest.approx(50 * rates.cache_read)
    assert more_reasoning_than_output.output == pytest.approx(25 * rates.reasoning)


def test_a_mocked_openai_call_costs_what_litellm_says() -> None:
    usage = Usage(
        prompt_tokens=1200,
        completion_tokens=300,
        total_tokens=1500,
        prompt_tokens_details={"cached_tokens": 1024},
    )
    answer = litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response=response("gpt-4o-mini", usage)
    )

    price = PriceResolver().resolve(answer.model, "openai")

    assert cost_of(price, answer.usage).total == pytest.approx(
        litellm.completion_cost(completion_response=answer), rel=1e-12
    )


def test_a_provider_prefixed_model_finds_the_same_price() -> None:
    resolver = PriceResolver()

    assert resolver.resolve("anthropic/claude-haiku-4-5", "anthropic") == resolver.resolve(
        "claude-haiku-4-5", "anthropic"
    )
    assert resolver.resolve("GPT-4O-MINI", "openai") == resolver.resolve("gpt-4o-mini", None)


def test_embedding_cost_equals_litellm() -> None:
    embedding = EmbeddingResponse(
        model="text-embedding-3-small", usage=Usage(prompt_tokens=12_345, total_tokens=12_345)
    )

    price = PriceResolver().resolve("text-embedding-3-small", "openai")

    expected = litellm.completion_cost(completion_response=embedding, custom_llm_provider="openai")
    assert expected > 0
    assert cost_of(price, embedding.usage).total == pytest.approx(expected, rel=1e-12)


def test_per_second_price_equals_litellm_for_the_same_duration(register: Register) -> None:
    register(
        "sagemaker/spendmeter-test-endpoint",
        input_cost_per_second=0.000_75,
        litellm_provider="sagemaker",
        mode="chat",
    )
    usage = Usage(prompt_tokens=50, completion_tokens=20, total_tokens=70)
    answer = response("spendmeter-test-endpoint", usage)
    answer._response_ms = 2_345.0  # how LiteLLM stamps a call's duration on its response

    price = PriceResolver().resolve("sagemaker/spendmeter-test-endpoint", "sagemaker")

    assert price is not None
    assert price.per_second == 0.000_75
    expected = litellm.completion_cost(completion_response=answer, custom_llm_provider="sagemaker")
    assert cost_of(price, usage, duration_s=2.345).total == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.000_75 * 2.345)


def test_a_per_second_price_needs_the_duration(register: Register) -> None:
    register(
        "sagemaker/spendmeter-test-endpoint",
        input_cost_per_second=0.000_75,
        litellm_provider="sagemaker",
        mode="chat",
    )
    price = PriceResolver().resolve("sagemaker/spendmeter-test-endpoint", "sagemaker")
    assert price is not None

    with pytest.raises(ValueError, match="per second"):
        compute_cost(price, TokenUsage(input_tokens=5))


# --- overrides ------------------------------------------------------------------------------


def test_base_model_override_prices_a_deployment_as_litellm_does() -> None:
    resolver = PriceResolver({"my-azure-deploy": {"base_model": "azure/gpt-4o"}})
    usage = Usage(
        prompt_tokens=5000,
        completion_tokens=700,
        total_tokens=5700,
        prompt_tokens_details={"cached_tokens": 3072},
    )

    price = resolver.resolve("azure/my-azure-deploy", "azure")

    assert price is not None
    assert (price.source, price.model) == ("override", "my-azure-deploy")
    expected = litellm.completion_cost(
        completion_response=response("my-azure-deploy", usage),
        custom_llm_provider="azure",
        base_model="azure/gpt-4o",
    )
    assert expected > 0
    assert cost_of(price, usage).total == pytest.approx(expected, rel=1e-12)
    assert resolver.resolve("my-azure-deploy", "azure") == price


def test_rates_given_next_to_base_model_replace_the_base_ones() -> None:
    base = PriceResolver().resolve("azure/gpt-4o", "azure")
    resolver = PriceResolver(
        {"my-azure-deploy": {"base_model": "azure/gpt-4o", "input_cost_per_token": 4e-6}}
    )

    price = resolver.resolve("my-azure-deploy", "azure")

    assert base is not None and price is not None
    assert price.rates.input == 4e-6
    assert price.rates.output == base.rates.output
    assert price.rates.cache_read == base.rates.cache_read


def test_an_override_wins_over_litellm() -> None:
    rates = {"input_cost_per_token": 1e-5, "output_cost_per_token": 3e-5}
    resolver = PriceResolver({"gpt-4o-mini": rates})
    usage = PARITY_CASES["openai chat with cached tokens"][2]

    price = resolver.resolve("openai/gpt-4o-mini", "openai")

    assert price is not None
    assert (price.source, price.model) == ("override", "gpt-4o-mini")
    expected = litellm.completion_cost(
        completion_response=response("gpt-4o-mini", usage),
        custom_llm_provider="openai",
        custom_cost_per_token=rates,
    )
    assert cost_of(price, usage).total == pytest.approx(expected, rel=1e-12)
    assert (
        cost_of(price, usage).total
        > cost_of(PriceResolver().resolve("gpt-4o-mini", "openai"), usage).total
    )


def test_an_override_written_with_its_provider_prefix_matches_the_bare_model() -> None:
    resolver = PriceResolver({"openai/gpt-4o-mini": {"input_cost_per_token": 1e-5}})

    price = resolver.resolve("gpt-4o-mini", "openai")

    assert price is not None
    assert (price.source, price.rates.input) == ("override", 1e-5)
    assert price.rates.cache_read == 1e-5


def test_an_override_prices_per_second() -> None:
    resolver = PriceResolver({"my-endpoint": {"input_cost_per_second": 0.002}})

    price = resolver.resolve("my-endpoint", None)

    assert cost_of(price, Usage(prompt_tokens=3), duration_s=1.5).total == pytest.approx(0.003)


def test_a_base_model_litellm_does_not_know_is_unpriced() -> None:
    resolver = PriceResolver({"my-deploy": {"base_model": "no-such-model-anywhere"}})

    assert resolver.resolve("my-deploy", "azure") is None


# --- LiteLLM's map as it stands at call time ---------------------------------------------------


def test_register_model_after_a_first_resolve_is_seen(register: Register) -> None:
    resolver = PriceResolver()
    model = "spendmeter-test-late-model"
    usage = Usage(prompt_tokens=1000, completion_tokens=100, total_tokens=1100)
    assert resolver.resolve(model, "openai") is None

    register(
        model, input_cost_per_token=1e-6, output_cost_per_token=2e-6, litellm_provider="openai"
    )
    first = resolver.resolve(model, "openai")
    register(
        model, input_cost_per_token=3e-6, output_cost_per_token=2e-6, litellm_provider="openai"
    )
    second = resolver.resolve(model, "openai")

    assert first is not None and second is not None
    assert (first.rates.input, second.rates.input) == (1e-6, 3e-6)
    expected = litellm.completion_cost(
        completion_response=response(model, usage), custom_llm_provider="openai"
    )
    assert cost_of(second, usage).total == pytest.approx(expected, rel=1e-12)


def test_a_price_edited_in_place_is_seen(register: Register) -> None:
    resolver = PriceResolver()
    model = "spendmeter-test-edited-model"
    register(
        model, input_cost_per_token=1e-6, output_cost_per_token=2e-6, litellm_provider="openai"
    )
    assert resolver.resolve(model, "openai") is not None

    litellm.model_cost[model]["output_cost_per_token"] = 9e-6
    price = resolver.resolve(model, "openai")

    assert price is not None
    assert price.rates.output == 9e-6


def test_a_base_model_registered_later_is_seen(register: Register) -> None:
    resolver = PriceResolver({"my-deploy": {"base_model": "spendmeter-test-base"}})
    assert resolver.resolve("my-deploy", "openai") is None

    register(
        "spendmeter-test-base",
        input_cost_per_token=2e-6,
        output_cost_per_token=4e-6,
        litellm_provider="openai",
    )
    price = resolver.resolve("my-deploy", "openai")

    assert price is not None
    assert (price.source, price.rates.input) == ("override", 2e-6)


# --- unpriced, never 0 -----------------------------------------------------------------------


def test_a_model_litellm_does_not_know_is_unpriced() -> None:
    assert PriceResolver().resolve("no-such-model-anywhere", "openai") is None
    assert PriceResolver().resolve("no-such-model-anywhere", None) is None


def test_a_mapped_model_without_token_prices_is_unpriced_not_free(register: Register) -> None:
    model = "spendmeter-test-priceless-model"
    register(model, litellm_provider="openai", mode="chat", max_tokens=4096)
    usage = Usage(prompt_tokens=1000, completion_tokens=100, total_tokens=1100)

    litellm_says = litellm.completion_cost(
        completion_response=response(model, usage), custom_llm_provider="openai"
    )

    assert litellm_says == 0.0
    assert PriceResolver().resolve(model, "openai") is None


def test_a_pricing_scheme_not_replayed_is_unpriced_rather_than_wrong() -> None:
    # Alibaba's tier tables price a whole request by its size: not replayed, so not guessed.
    model = "dashscope/qwen-flash"
    assert litellm.model_cost[model].get("tiered_pricing")

    assert PriceResolver().resolve(model, "dashscope") is None


def test_a_free_model_priced_at_zero_by_its_entry_is_priced(register: Register) -> None:
    model = "spendmeter-test-free-model"
    register(model, input_cost_per_token=0.0, output_cost_per_token=0.0, litellm_provider="openai")

    price = PriceResolver().resolve(model, "openai")

    assert price is not None
    assert cost_of(price, Usage(prompt_tokens=10, completion_tokens=10)).total == 0.0


# --- per-call custom pricing ----------------------------------------------------------------


def test_per_call_token_pricing_equals_litellm() -> None:
    kwargs = {
        "model": "my-finetune",
        "messages": MESSAGES,
        "input_cost_per_token": 2e-6,
        "output_cost_per_token": 8e-6,
    }
    usage = Usage(prompt_tokens=900, completion_tokens=90, total_tokens=990)

    price = PriceResolver().per_call(kwargs)

    assert price is not None
    assert (price.source, price.model) == ("litellm", "my-finetune")
    expected = litellm.completion_cost(
        completion_response=response("my-finetune", usage),
        custom_llm_provider="openai",
        custom_cost_per_token={"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6},
    )
    assert cost_of(price, usage).total == pytest.approx(expected, rel=1e-12)


def test_for_call_puts_the_users_override_before_per_call_pricing() -> None:
    resolver = PriceResolver({"gpt-4o-mini": {"input_cost_per_token": 1e-5}})
    params = {"model": "gpt-4o-mini", "input_cost_per_token": 1, "output_cost_per_token": 1}

    price = resolver.for_call("gpt-4o-mini", "openai", params)

    assert price is not None
    assert (price.source, price.rates.input) == ("override", 1e-5)


def test_for_call_takes_per_call_pricing_before_litellms_map() -> None:
    params = {"model": "gpt-4o-mini", "input_cost_per_token": 2e-6, "output_cost_per_token": 4e-6}

    price = PriceResolver().for_call("gpt-4o-mini", "openai", params)

    assert price is not None
    assert (price.rates.input, price.rates.output) == (2e-6, 4e-6)


def test_for_call_prices_the_model_that_answered_first_as_litellm_does() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=100, total_tokens=1100)
    answered = response("gpt-4o-2024-05-13", usage)

    price = PriceResolver().for_call("gpt-4o", "openai", {}, response_model=answered.model)

    assert price is not None
    assert price.model == "gpt-4o-2024-05-13"
    expected = litellm.completion_cost(completion_response=answered, model=None)
    assert cost_of(price, usage).total == pytest.approx(expected, rel=1e-12)


def test_for_call_matches_overrides_by_the_model_asked_for_only() -> None:
    resolver = PriceResolver({"fakellm/answering-model": {"input_cost_per_token": 1e-3}})

    price = resolver.for_call(
        "fakellm/unpriced-model", "fakellm", {}, response_model="answering-model"
    )

    assert price is None


def test_for_call_falls_back_to_the_model_asked_for() -> None:
    price = PriceResolver().for_call("gpt-4o-mini", "openai", {}, response_model="no-such-model")

    assert price is not None
    assert price.model == "gpt-4o-mini"


def test_per_call_per_second_pricing() -> None:
    price = PriceResolver().per_call({"model": "m", "input_cost_per_second": 0.01})

    assert cost_of(price, Usage(prompt_tokens=1), duration_s=2.0).total == pytest.approx(0.02)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"model": "gpt-4o-mini"}, {"input_cost_per_token": 1e-6}, {"input_cost_per_token": None}],
    ids=repr,
)
def test_no_per_call_pricing_without_both_token_rates_or_a_second_rate(
    kwargs: dict[str, Any],
) -> None:
    assert PriceResolver().per_call(kwargs) is None


# --- load_overrides ---------------------------------------------------------------------------

EXPECTED_OVERRIDES = {
    "my-azure-deploy": {"base_model": "azure/gpt-4o"},
    "my-model": {"input_cost_per_token": 3e-7, "output_cost_per_token": 1.2e-6},
}


def test_load_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "my-azure-deploy:\n"
        "  base_model: azure/gpt-4o\n"
        "my-model:\n"
        "  input_cost_per_token: 3e-7   # YAML reads this as a string\n"
        "  output_cost_per_token: 0.0000012\n"
    )

    assert load_overrides(path) == EXPECTED_OVERRIDES
    assert load_overrides(str(path)) == EXPECTED_OVERRIDES


def test_load_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(EXPECTED_OVERRIDES))

    assert load_overrides(path) == EXPECTED_OVERRIDES


def test_load_a_mapping() -> None:
    assert load_overrides(EXPECTED_OVERRIDES) == EXPECTED_OVERRIDES
    assert load_overrides({"m": {"input_cost_per_second": 1}}) == {
        "m": {"input_cost_per_second": 1.0}
    }
    assert load_overrides(None) == {}


def test_an_empty_file_has_no_overrides(tmp_path: Path) -> None:
    path = tmp_path / "prices.yml"
    path.write_text("")

    assert load_overrides(path) == {}


MALFORMED_FILES = {
    "not yaml": ("prices.yaml", "my-model: {input_cost_per_token: [1\n", "invalid YAML"),
    "not json": ("prices.json", '{"my-model": {', "invalid JSON"),
    "top level a list": ("prices.yaml", "- my-model\n", "top level must map model names"),
    "entry not a mapping": (
        "prices.yaml",
        "my-model: 3e-7\n",
        "model 'my-model': expected a mapping",
    ),
    "unknown key": (
        "prices.yaml",
        "my-model:\n  input_cost: 1\n",
        "model 'my-model': unknown key 'input_cost' (allowed: input_cost_per_token,",
    ),
    "non-numeric price": (
        "prices.yaml",
        "my-model:\n  input_cost_per_token: cheap\n",
        "model 'my-model': key 'input_cost_per_token' must be a non-negative number",
    ),
    "negative price": (
        "prices.json",
        '{"my-model": {"output_cost_per_token": -1e-6}}',
        "model 'my-model': key 'output_cost_per_token' must be a non-negative number",
    ),
    "boolean price": (
        "prices.yaml",
        "my-model:\n  input_cost_per_token: true\n",
        "key 'input_cost_per_token' must be a non-negative number",
    ),
    "infinite price": (
        "prices.yaml",
        "my-model:\n  input_cost_per_token: .inf\n",
        "key 'input_cost_per_token' must be a non-negative number",
    ),
    "empty base_model": (
        "prices.yaml",
        "my-model:\n  base_model: ''\n",
        "model 'my-model': key 'base_model' must be a non-empty model name",
    ),
    "base_model not a string": (
        "prices.yaml",
        "my-model:\n  base_model: 4\n",
        "key 'base_model' must be a non-empty model name",
    ),
    "no price at all": (
        "prices.yaml",
        "my-model:\n  cache_read_input_token_cost: 1e-7\n",
        "model 'my-model': no price",
    ),
    "model name not a string": (
        "prices.yaml",
        "4:\n  input_cost_per_token: 1e-7\n",
        "model names must be non-empty strings",
    ),
    "unsupported file type": ("prices.toml", "", "unsupported file type"),
}


@pytest.mark.parametrize(
    ("name", "content", "problem"), MALFORMED_FILES.values(), ids=MALFORMED_FILES
)
def test_a_malformed_file_names_the_file_and_the_problem(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(content)

    with pytest.raises(PricingConfigError) as raised:
        load_overrides(path)

    assert f"pricing file {str(path)!r}: " in str(raised.value)
    assert problem in str(raised.value)


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    with pytest.raises(PricingConfigError, match=r"nowhere\.yaml': file not found"):
        load_overrides(path)


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.mkdir()

    with pytest.raises(PricingConfigError, match=r"prices\.yaml': cannot be read"):
        load_overrides(path)


def test_a_bad_mapping_is_an_error_naming_model_and_key() -> None:
    with pytest.raises(PricingConfigError, match="model 'm': key 'input_cost_per_token'"):
        PriceResolver({"m": {"input_cost_per_token": "free"}})


def test_pricing_of_another_type_is_an_error() -> None:
    with pytest.raises(PricingConfigError, match="path to a YAML/JSON file or a mapping"):
        load_overrides(42)  # type: ignore[arg-type]
