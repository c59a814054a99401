"""Pricing, through the instrumented LiteLLM: the rules of DESIGN.md section 4, first match wins.

The cost on a span is LiteLLM's own figure for the call (service tiers, base_model, per-call
prices included); a cost the provider reported wins over it; the user's overrides win over both;
a model nobody priced is unpriced, never free. The parts always add up to the total.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
from litellm import Usage

from spendmeter import semconv as sc
from spendmeter._overrides import PriceResolver, compute_cost
from spendmeter._usage import TokenUsage
from spendmeter.pricing import PricingConfigError, load_overrides
from tests._support import COST_PARTS, MESSAGES, Telemetry, answer

Register = Callable[..., None]


def plain_usage() -> Usage:
    return Usage(prompt_tokens=1000, completion_tokens=200, total_tokens=1200)


def call(model: str, usage: Usage | None = None, **kwargs: Any) -> Any:
    mock = kwargs.pop("mock_response", None) or answer(model.split("/")[-1], usage or plain_usage())
    return litellm.completion(model=model, messages=MESSAGES, mock_response=mock, **kwargs)


def assert_parts_add_up(attributes: Any) -> None:
    parts = [attributes[key] for key in COST_PARTS]
    assert min(parts) >= 0
    assert sum(parts) == pytest.approx(attributes[sc.GEN_AI_USAGE_COST], rel=1e-12)


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


# --- rule 3: LiteLLM's own figure -----------------------------------------------------------

PARITY_CASES = {
    "openai chat with cached tokens": (
        "gpt-4o-mini",
        Usage(
            prompt_tokens=3000,
            completion_tokens=250,
            total_tokens=3250,
            prompt_tokens_details={"cached_tokens": 2048},
        ),
    ),
    "anthropic cache read and write": (
        "anthropic/claude-haiku-4-5",
        Usage(
            prompt_tokens=5540,
            completion_tokens=300,
            total_tokens=5840,
            cache_read_input_tokens=4000,
            cache_creation_input_tokens=1500,
        ),
    ),
    "reasoning model": (
        "o3-mini",
        Usage(
            prompt_tokens=700,
            completion_tokens=1800,
            total_tokens=2500,
            prompt_tokens_details={"cached_tokens": 256},
            completion_tokens_details={"reasoning_tokens": 1500},
        ),
    ),
    "long-context rates above 200k tokens": (
        "gemini/gemini-2.5-pro",
        Usage(
            prompt_tokens=250_000,
            completion_tokens=4000,
            total_tokens=254_000,
            prompt_tokens_details={"cached_tokens": 100_000},
        ),
    ),
    "audio tokens": (
        "gpt-4o-audio-preview-2024-12-17",
        Usage(
            prompt_tokens=600,
            completion_tokens=900,
            total_tokens=1500,
            prompt_tokens_details={"audio_tokens": 400},
            completion_tokens_details={"audio_tokens": 700},
        ),
    ),
    "fireworks default cache-read rate": (
        "fireworks_ai/accounts/fireworks/models/llama-v3p1-8b-instruct",
        Usage(
            prompt_tokens=5000,
            completion_tokens=100,
            total_tokens=5100,
            prompt_tokens_details={"cached_tokens": 4000},
        ),
    ),
}


@pytest.mark.parametrize(("model", "usage"), PARITY_CASES.values(), ids=PARITY_CASES)
def test_cost_is_litellms_figure_and_parts_add_up(
    telemetry: Telemetry, model: str, usage: Usage
) -> None:
    response = call(model, usage)

    attributes = telemetry.span().attributes
    expected = litellm.completion_cost(completion_response=response, model=model)
    assert expected > 0
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)
    assert attributes[sc.SPENDMETER_PRICING_SOURCE] == sc.SOURCE_LITELLM
    assert_parts_add_up(attributes)


def test_cache_parts_are_litellms_own_split(telemetry: Telemetry) -> None:
    call("anthropic/claude-haiku-4-5", PARITY_CASES["anthropic cache read and write"][1])

    attributes = telemetry.span().attributes
    entry = litellm.model_cost["claude-haiku-4-5"]
    assert attributes[sc.SPENDMETER_COST_CACHE_READ] == pytest.approx(
        4000 * entry["cache_read_input_token_cost"], rel=1e-12
    )
    assert attributes[sc.SPENDMETER_COST_CACHE_WRITE] == pytest.approx(
        1500 * entry["cache_creation_input_token_cost"], rel=1e-12
    )
    assert attributes[sc.SPENDMETER_COST_INPUT] == pytest.approx(
        40 * entry["input_cost_per_token"], rel=1e-12
    )


@pytest.mark.parametrize("tier", ["priority", "flex"])
def test_a_service_tier_is_priced_and_recorded(telemetry: Telemetry, tier: str) -> None:
    response = call("gpt-5", service_tier=tier)

    attributes = telemetry.span().attributes
    expected = litellm.completion_cost(completion_response=response, service_tier=tier)
    standard = litellm.completion_cost(completion_response=response)
    assert expected != standard
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)
    assert attributes[sc.OPENAI_REQUEST_SERVICE_TIER] == tier
    assert "gen_ai.request.service_tier" not in attributes
    assert_parts_add_up(attributes)  # the parts of a priority call: all of it, not 57%


def test_the_tier_the_response_says_is_recorded(telemetry: Telemetry) -> None:
    call(
        "gpt-4.1",
        mock_response=answer("gpt-4.1", plain_usage(), service_tier="flex"),
        service_tier="auto",
    )

    attributes = telemetry.span().attributes
    assert attributes[sc.OPENAI_REQUEST_SERVICE_TIER] == "auto"
    assert attributes[sc.OPENAI_RESPONSE_SERVICE_TIER] == "flex"


def test_per_call_custom_pricing_is_litellms(
    telemetry: Telemetry, price_map_restored: None
) -> None:
    response = call(
        "spendmeter-per-call-model",  # LiteLLM keeps per-call prices: a name of our own
        custom_llm_provider="openai",
        input_cost_per_token=2e-6,
        output_cost_per_token=4e-6,
    )
    usage = response.usage
    expected = usage.prompt_tokens * 2e-6 + usage.completion_tokens * 4e-6
    assert telemetry.span().attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)


def test_a_price_registered_after_a_first_call_is_used(
    telemetry: Telemetry, register: Register
) -> None:
    model = "spendmeter-test-later"
    call(model, custom_llm_provider="openai")
    register(
        model,
        litellm_provider="openai",
        mode="chat",
        input_cost_per_token=3e-6,
        output_cost_per_token=9e-6,
    )
    response = call(model, custom_llm_provider="openai")

    before, after = telemetry.spans()
    assert before.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
    assert after.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(
        litellm.completion_cost(completion_response=response), rel=1e-12
    )


# --- rule 4: unpriced, never $0 ------------------------------------------------------------


def test_an_entry_without_a_price_field_is_unpriced_not_free(
    telemetry: Telemetry, register: Register, caplog: pytest.LogCaptureFixture
) -> None:
    model = "spendmeter-test-no-prices"
    register(model, litellm_provider="openai", mode="chat", max_tokens=1000)

    with caplog.at_level(logging.WARNING, logger="spendmeter"):
        for _ in range(2):
            response = call(model, custom_llm_provider="openai")

    assert response._hidden_params["response_cost"] == 0.0  # what LiteLLM says
    for span in telemetry.spans():
        assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
        assert sc.GEN_AI_USAGE_COST not in span.attributes
        assert sc.SPENDMETER_COST_OTHER not in span.attributes
    assert len([r for r in caplog.records if model in r.getMessage()]) == 1
    assert telemetry.metric_sum(sc.METRIC_UNPRICED_CALLS) == 2
    assert telemetry.points(sc.METRIC_COST) == []


def test_a_model_priced_at_zero_by_its_entry_is_free(
    telemetry: Telemetry, register: Register
) -> None:
    model = "spendmeter-test-free"
    register(
        model,
        litellm_provider="openai",
        mode="chat",
        input_cost_per_token=0.0,
        output_cost_per_token=0.0,
    )
    call(model, custom_llm_provider="openai")

    attributes = telemetry.span().attributes
    assert attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_PRICED
    assert attributes[sc.GEN_AI_USAGE_COST] == 0.0


# --- rule 2: the provider's figure ---------------------------------------------------------


def test_a_cost_the_provider_reported_is_the_cost(telemetry: Telemetry) -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=200, total_tokens=1200, cost=0.0123)
    call("openrouter/openai/gpt-4o", mock_response=answer("openai/gpt-4o", usage))

    attributes = telemetry.span().attributes
    assert attributes[sc.SPENDMETER_PRICING_SOURCE] == sc.SOURCE_PROVIDER
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(0.0123, rel=1e-12)
    assert_parts_add_up(attributes)


def test_a_proxys_cost_header_is_the_providers_figure(telemetry: Telemetry) -> None:
    response = answer("gpt-4o-mini", plain_usage())
    response._hidden_params["additional_headers"] = {
        "llm_provider-x-litellm-response-cost": "0.0042"
    }
    call("gpt-4o-mini", mock_response=response)

    attributes = telemetry.span().attributes
    assert attributes[sc.SPENDMETER_PRICING_SOURCE] == sc.SOURCE_PROVIDER
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(0.0042, rel=1e-12)
    assert_parts_add_up(attributes)


# --- rule 1: overrides ---------------------------------------------------------------------


def test_an_override_wins_over_litellm_and_the_provider(instrument: Any) -> None:
    telemetry = instrument(
        pricing={"gpt-4o-mini": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}
    )
    usage = Usage(prompt_tokens=1000, completion_tokens=200, total_tokens=1200, cost=0.5)
    call("gpt-4o-mini", mock_response=answer("gpt-4o-mini", usage))

    attributes = telemetry.span().attributes
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(1000 * 1e-6 + 200 * 2e-6, rel=1e-12)
    assert attributes[sc.SPENDMETER_PRICING_SOURCE] == sc.SOURCE_OVERRIDE
    assert attributes[sc.SPENDMETER_PRICING_MODEL] == "gpt-4o-mini"
    assert_parts_add_up(attributes)


def test_a_base_model_override_is_priced_by_litellm_as_that_model(instrument: Any) -> None:
    telemetry = instrument(pricing={"my-deployment": {"base_model": "gpt-4.1"}})
    response = call("my-deployment", custom_llm_provider="openai", service_tier="priority")

    attributes = telemetry.span().attributes
    expected = litellm.completion_cost(
        completion_response=response, model="gpt-4.1", service_tier="priority"
    )
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)
    assert attributes[sc.SPENDMETER_PRICING_SOURCE] == sc.SOURCE_OVERRIDE
    assert_parts_add_up(attributes)


def test_rates_given_next_to_base_model_replace_the_base_ones() -> None:
    resolver = PriceResolver(
        {"my-azure-deploy": {"base_model": "azure/gpt-4o", "output_cost_per_token": 1e-4}}
    )
    price = resolver.resolve("my-azure-deploy", "azure")

    assert price is not None
    base = litellm.model_cost["azure/gpt-4o"]
    assert price.rates.input == base["input_cost_per_token"]
    assert price.rates.output == 1e-4


def test_an_override_written_with_its_provider_prefix_matches_the_bare_model() -> None:
    resolver = PriceResolver({"openai/gpt-4o-mini": {"input_cost_per_token": 1e-5}})

    price = resolver.resolve("gpt-4o-mini", "openai")
    assert price is not None
    assert price.model == "openai/gpt-4o-mini"
    assert resolver.resolve("gpt-4o", "openai") is None


def test_an_override_prices_per_second() -> None:
    price = PriceResolver({"my-endpoint": {"input_cost_per_second": 0.002}}).resolve(
        "my-endpoint", None
    )
    assert price is not None
    cost = compute_cost(price, TokenUsage(input_tokens=3), duration_s=1.5)
    assert cost.total == pytest.approx(0.003)
    with pytest.raises(ValueError, match="per second"):
        compute_cost(price, TokenUsage(input_tokens=3))


def test_override_parts_split_reads_and_writes() -> None:
    price = PriceResolver(
        {
            "my-model": {
                "input_cost_per_token": 1e-6,
                "output_cost_per_token": 4e-6,
                "cache_read_input_token_cost": 1e-7,
                "cache_creation_input_token_cost": 1.25e-6,
            }
        }
    ).resolve("my-model", None)
    assert price is not None
    usage = TokenUsage(
        input_tokens=1000, output_tokens=10, cache_read_tokens=600, cache_write_tokens=300
    )

    cost = compute_cost(price, usage)
    assert cost.input == pytest.approx(100 * 1e-6)
    assert cost.cache_read == pytest.approx(600 * 1e-7)
    assert cost.cache_write == pytest.approx(300 * 1.25e-6)
    assert cost.other == 0.0
    parts = cost.input + cost.output + cost.cache_read + cost.cache_write + cost.other
    assert parts == pytest.approx(cost.total, rel=1e-12)


def test_inconsistent_counts_are_clamped_never_billed_twice_or_below_zero() -> None:
    price = PriceResolver({"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}})
    resolved = price.resolve("m", None)
    assert resolved is not None

    more_cached_than_prompt = compute_cost(
        resolved, TokenUsage(input_tokens=10, cache_read_tokens=50)
    )
    more_reasoning_than_output = compute_cost(
        resolved, TokenUsage(output_tokens=10, reasoning_tokens=50)
    )
    for cost in (more_cached_than_prompt, more_reasoning_than_output):
        assert min(cost) >= 0


def test_a_base_model_litellm_does_not_know_is_unpriced(instrument: Any) -> None:
    telemetry = instrument(pricing={"my-deploy": {"base_model": "no-such-model-anywhere"}})
    call("my-deploy", custom_llm_provider="openai")

    assert telemetry.span().attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED


def test_a_base_model_registered_later_is_seen(register: Register) -> None:
    resolver = PriceResolver({"my-deploy": {"base_model": "spendmeter-test-base"}})
    assert resolver.resolve("my-deploy", "openai") is None

    register(
        "spendmeter-test-base",
        litellm_provider="openai",
        mode="chat",
        input_cost_per_token=1e-6,
        output_cost_per_token=2e-6,
    )
    price = resolver.resolve("my-deploy", "openai")
    assert price is not None
    assert price.base_model == "spendmeter-test-base"


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
    # A file that prices nothing is a mistake (the wrong file, a failed write), not a choice.
    "empty YAML": ("prices.yml", "", "the file is empty"),
    "only comments": ("prices.yaml", "# prices go here\n", "the file is empty"),
    "empty JSON object": ("prices.json", "{}", "no model is priced"),
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
