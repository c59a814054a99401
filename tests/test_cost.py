"""Cost on spans, through the instrumentor: equal to LiteLLM's own figure, overrides on top,
and never 0 for a model nobody priced."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
from litellm import Usage

from spendmeter import semconv as sc
from spendmeter.pricing import PricingConfigError
from tests._support import COST_PARTS, MESSAGES, Telemetry, answer


def mocked(model: str, usage: Usage, **kwargs: Any) -> Any:
    """A call whose provider 'returns' exactly this usage."""
    response = answer(model.split("/")[-1], usage, id="resp-1")
    return litellm.completion(model=model, messages=MESSAGES, mock_response=response, **kwargs)


def test_anthropic_cache_read_and_write_cost_as_litellm(telemetry: Telemetry) -> None:
    usage = Usage(
        prompt_tokens=1200,
        completion_tokens=300,
        total_tokens=1500,
        cache_creation_input_tokens=200,
        cache_read_input_tokens=800,
    )
    response = mocked("anthropic/claude-haiku-4-5", usage)

    attributes = telemetry.span().attributes
    assert attributes[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attributes[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 800
    assert attributes[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 200
    expected = litellm.completion_cost(completion_response=response)
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)
    assert attributes[sc.SPENDMETER_COST_CACHE_READ] > 0
    assert attributes[sc.SPENDMETER_COST_CACHE_WRITE] > 0


def test_reasoning_tokens_cost_as_litellm(telemetry: Telemetry) -> None:
    usage = Usage(
        prompt_tokens=100,
        completion_tokens=900,
        total_tokens=1000,
        completion_tokens_details={"reasoning_tokens": 700},
        prompt_tokens_details={"cached_tokens": 40},
    )
    response = mocked("o4-mini", usage)

    attributes = telemetry.span().attributes
    assert attributes[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 700
    assert attributes[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 40
    expected = litellm.completion_cost(completion_response=response)
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)


def test_override_wins_over_litellm(instrument: Any) -> None:
    telemetry = instrument(
        pricing={"gpt-4o-mini": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}
    )
    response = litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="hi")

    attributes = telemetry.span().attributes
    usage = response.usage
    expected = usage.prompt_tokens * 1e-6 + usage.completion_tokens * 2e-6
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)
    assert attributes[sc.SPENDMETER_PRICING_SOURCE] == "override"
    assert attributes[sc.SPENDMETER_PRICING_MODEL] == "gpt-4o-mini"


def test_base_model_prices_a_deployment_as_another_model(instrument: Any) -> None:
    telemetry = instrument(pricing={"my-gpt4o-deployment": {"base_model": "gpt-4o"}})
    response = litellm.completion(
        model="my-gpt4o-deployment",
        custom_llm_provider="openai",
        messages=MESSAGES,
        mock_response="hi",
    )

    attributes = telemetry.span().attributes
    expected = litellm.completion_cost(completion_response=response, model="gpt-4o")
    assert expected > 0
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)
    assert attributes[sc.SPENDMETER_PRICING_SOURCE] == "override"


def test_pricing_file_from_env(
    instrument: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "gpt-4o-mini:\n  input_cost_per_token: 0.000001\n  output_cost_per_token: 0\n"
    )
    monkeypatch.setenv("SPENDMETER_PRICING_FILE", str(prices))
    telemetry = instrument()
    response = litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="hi")

    cost = telemetry.span().attributes[sc.GEN_AI_USAGE_COST]
    assert cost == pytest.approx(response.usage.prompt_tokens * 1e-6, rel=1e-12)


def test_malformed_pricing_file_fails_at_instrument_time(instrument: Any, tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"input_cost_per_tokn": 1e-6}}))
    with pytest.raises(PricingConfigError) as raised:
        instrument(pricing=str(prices))
    assert "prices.json" in str(raised.value)
    assert "input_cost_per_tokn" in str(raised.value)


def test_unpriced_model_is_never_free(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="spendmeter"):
        for _ in range(2):
            litellm.completion(
                model="my-org/finetune-v2",
                custom_llm_provider="openai",
                messages=MESSAGES,
                mock_response="hi",
            )

    for span in telemetry.spans():
        assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
        assert sc.GEN_AI_USAGE_COST not in span.attributes
        assert sc.SPENDMETER_COST_INPUT not in span.attributes
    warnings = [r for r in caplog.records if "my-org/finetune-v2" in r.getMessage()]
    assert len(warnings) == 1
    assert telemetry.metric_sum(sc.METRIC_UNPRICED_CALLS) == 2
    assert telemetry.points(sc.METRIC_COST) == []


def test_a_stream_dropped_before_its_first_chunk_warns_of_no_missing_price(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="spendmeter"):
        stream = litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="hi", stream=True
        )
        del stream  # nothing came, so nothing is priced: the model's price is not missing
        litellm.completion(
            model="my-org/finetune-v2",
            custom_llm_provider="openai",
            messages=MESSAGES,
            mock_response="hi",
        )

    dropped, _finetune = telemetry.spans()
    assert dropped.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
    warned = [r.getMessage() for r in caplog.records if "no price for model" in r.getMessage()]
    assert len(warned) == 1
    assert "my-org/finetune-v2" in warned[0]


@pytest.fixture
def registered_model() -> Iterator[str]:
    name = "spendmeter-test-model"
    yield name
    litellm.model_cost.pop(name, None)


def test_price_registered_after_first_call_is_used(
    telemetry: Telemetry, registered_model: str
) -> None:
    def call() -> Any:
        return litellm.completion(
            model=registered_model,
            custom_llm_provider="openai",
            messages=MESSAGES,
            mock_response="hi",
        )

    call()
    litellm.register_model(
        {
            registered_model: {
                "input_cost_per_token": 3e-6,
                "output_cost_per_token": 9e-6,
                "litellm_provider": "openai",
                "mode": "chat",
            }
        }
    )
    response = call()

    before, after = telemetry.spans()
    assert before.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
    assert after.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(
        litellm.completion_cost(completion_response=response), rel=1e-12
    )
    assert after.attributes[sc.GEN_AI_USAGE_COST] > 0


def test_per_call_custom_pricing(telemetry: Telemetry, price_map_restored: None) -> None:
    response = litellm.completion(
        model="spendmeter-per-call-model",  # LiteLLM keeps per-call prices: a name of our own
        custom_llm_provider="openai",
        messages=MESSAGES,
        mock_response="hi",
        input_cost_per_token=2e-6,
        output_cost_per_token=4e-6,
    )
    usage = response.usage
    expected = usage.prompt_tokens * 2e-6 + usage.completion_tokens * 4e-6
    assert telemetry.span().attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("is_async", [False, True], ids=["text_completion", "atext_completion"])
async def test_a_text_completion_costs_litellms_own_figure(
    telemetry: Telemetry, price_map_restored: None, is_async: bool
) -> None:
    # A text completion keeps its hidden params on a pydantic object, not a dict; the per-call
    # prices are in LiteLLM's figure only, so a cost calculated afresh would miss them.
    ask: dict[str, Any] = {
        "model": "spendmeter-per-call-text-model",
        "custom_llm_provider": "openai",
        "prompt": "How much does this cost?",
        "mock_response": "hi",
        "input_cost_per_token": 2e-3,
        "output_cost_per_token": 4e-3,
    }
    if is_async:
        response = await litellm.atext_completion(**ask)
    else:
        response = litellm.text_completion(**ask)

    expected = response._hidden_params["response_cost"]
    usage = response.usage
    assert expected == pytest.approx(usage.prompt_tokens * 2e-3 + usage.completion_tokens * 4e-3)
    attributes = telemetry.span().attributes
    assert attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_PRICED
    assert attributes[sc.GEN_AI_USAGE_COST] == expected
    assert sum(attributes[part] for part in COST_PARTS) == pytest.approx(expected, rel=1e-12)


PER_CALL_PRICES = {"input_cost_per_token": 2e-3, "output_cost_per_token": 4e-3}


def _priced_at_per_call_prices(telemetry: Telemetry) -> None:
    """The stream's span is priced at the call's own prices, for the tokens counted."""
    [attempt] = [s for s in telemetry.spans() if sc.GEN_AI_USAGE_INPUT_TOKENS in s.attributes]
    attributes = attempt.attributes
    expected = (
        attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] * PER_CALL_PRICES["input_cost_per_token"]
        + attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] * PER_CALL_PRICES["output_cost_per_token"]
    )
    assert attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-9)
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(expected, rel=1e-9)


def test_a_stream_without_usage_costs_its_per_call_prices(
    telemetry: Telemetry, price_map_restored: None
) -> None:
    # Priced from the chunks, yet at the prices the call named: not the price map's rates.
    stream = litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="Tokens in and tokens out, both billed.",
        stream=True,
        **PER_CALL_PRICES,
    )
    for _chunk in stream:
        pass

    _priced_at_per_call_prices(telemetry)


async def test_a_router_stream_without_usage_costs_its_deployments_prices(
    telemetry: Telemetry, price_map_restored: None
) -> None:
    router = litellm.Router(
        model_list=[
            {
                "model_name": "tuned",
                "litellm_params": {"model": "openai/spendmeter-fine-tune", **PER_CALL_PRICES},
            }
        ]
    )
    stream = await router.acompletion(
        model="tuned", messages=MESSAGES, mock_response="A fine-tune's own price.", stream=True
    )
    async for _chunk in stream:
        pass

    _priced_at_per_call_prices(telemetry)


def test_per_second_pricing(instrument: Any) -> None:
    telemetry = instrument(pricing={"gpt-4o-mini": {"input_cost_per_second": 0.5}})
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="hi")

    span = telemetry.span()
    seconds = (span.end_time - span.start_time) / 1e9
    cost = span.attributes[sc.GEN_AI_USAGE_COST]
    assert 0 < cost <= seconds * 0.5
    assert cost == pytest.approx(seconds * 0.5, rel=0.2)


def test_missing_usage_from_provider_is_unpriced_not_free(
    telemetry: Telemetry, fake_provider: Any
) -> None:
    fake_provider.usage = None
    response = litellm.completion(model="fakellm/anything", messages=MESSAGES)

    assert response.choices[0].message.content == "ok"
    span = telemetry.span()
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
    assert sc.GEN_AI_USAGE_COST not in span.attributes


def test_the_model_that_answered_is_priced_first_as_litellm_does(telemetry: Telemetry) -> None:
    dated = answer(
        "gpt-4o-2024-05-13",  # LiteLLM prices this dated model, not the alias asked for
        Usage(prompt_tokens=1000, completion_tokens=100, total_tokens=1100),
        id="resp-1",
    )
    response = litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response=dated)

    attributes = telemetry.span().attributes
    assert attributes[sc.SPENDMETER_PRICING_MODEL] == "gpt-4o-2024-05-13"
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(
        litellm.completion_cost(completion_response=response), rel=1e-12
    )
    parts = attributes[sc.SPENDMETER_COST_INPUT] + attributes[sc.SPENDMETER_COST_OUTPUT]
    assert parts == pytest.approx(attributes[sc.GEN_AI_USAGE_COST], rel=1e-12)


# --- streams without usage: counted as LiteLLM's stream_chunk_builder counts them ---------------


def assert_estimated_like_litellm(attributes: Any, chunks: list[Any], tier: str | None) -> Any:
    rebuilt = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    assert attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED
    assert attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == rebuilt.usage.prompt_tokens
    assert attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == rebuilt.usage.completion_tokens
    expected = litellm.completion_cost(completion_response=rebuilt, service_tier=tier)
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)
    parts = sum(attributes[key] for key in COST_PARTS)
    assert parts == pytest.approx(expected, rel=1e-12)
    return rebuilt


def test_a_stream_of_tool_calls_counts_their_names_and_arguments(telemetry: Telemetry) -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call-1",
                "type": "function",
                "function": {"name": "get_price", "arguments": '{"model": "gpt-4.1", "n": 12}'},
            }
        ],
    }
    chunks = list(
        litellm.completion(
            model="gpt-4.1",
            messages=MESSAGES,
            mock_response=answer("gpt-4.1", message=message, finish_reason="tool_calls"),
            stream=True,
        )
    )

    rebuilt = assert_estimated_like_litellm(telemetry.span().attributes, chunks, None)
    assert rebuilt.usage.completion_tokens > 0


def test_a_stream_of_reasoning_counts_it(telemetry: Telemetry) -> None:
    message = {
        "role": "assistant",
        "content": "Twelve dollars.",
        "reasoning_content": "The price per token times the tokens, then rounded to the cent.",
    }
    chunks = list(
        litellm.completion(
            model="gpt-4.1",
            messages=MESSAGES,
            mock_response=answer("gpt-4.1", message=message),
            stream=True,
        )
    )

    attributes = telemetry.span().attributes
    rebuilt = assert_estimated_like_litellm(attributes, chunks, None)
    reasoning = rebuilt.usage.completion_tokens_details.reasoning_tokens
    assert reasoning > 0
    assert attributes[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == reasoning


def test_a_stream_of_several_choices_counts_each(telemetry: Telemetry) -> None:
    chunks = list(
        litellm.completion(
            model="gpt-4.1",
            messages=MESSAGES,
            mock_response="Each choice is billed for its own tokens.",
            n=3,
            stream=True,
            service_tier="priority",
        )
    )

    assert_estimated_like_litellm(telemetry.span().attributes, chunks, "priority")


def test_a_stream_without_usage_and_no_token_counter_is_unpriced(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(litellm, "disable_token_counter", True)
    list(litellm.completion(model="gpt-4.1", messages=MESSAGES, mock_response="hi", stream=True))

    attributes = telemetry.span().attributes
    assert attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
    assert sc.GEN_AI_USAGE_COST not in attributes
    assert telemetry.metric_sum(sc.METRIC_UNPRICED_CALLS) == 1


def test_a_base_model_deployment_streamed_without_usage_is_priced(telemetry: Telemetry) -> None:
    chunks = list(
        litellm.completion(
            model="azure/my-gpt-4o-deployment",
            messages=MESSAGES,
            mock_response="Priced as the base model.",
            stream=True,
            model_info={"id": "deployment-1", "base_model": "azure/gpt-4o"},
            api_key="not-used",
            api_base="https://example.openai.azure.com",
            api_version="2024-06-01",
        )
    )

    attributes = telemetry.span().attributes
    rebuilt = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    expected = litellm.completion_cost(completion_response=rebuilt, base_model="azure/gpt-4o")
    assert expected > 0
    assert attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_ESTIMATED
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-12)
    assert attributes[sc.SPENDMETER_PRICING_MODEL] == "azure/gpt-4o"


def test_an_embedding_has_no_output_tokens(telemetry: Telemetry) -> None:
    response = litellm.embedding(
        model="text-embedding-3-small", input=["what does this cost"], mock_response=[0.1, 0.2]
    )

    attributes = telemetry.span().attributes
    assert sc.GEN_AI_USAGE_OUTPUT_TOKENS not in attributes
    assert attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == response.usage.prompt_tokens
    assert attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(
        litellm.completion_cost(completion_response=response, call_type="embedding"), rel=1e-12
    )
    kinds = {p.attributes[sc.GEN_AI_TOKEN_TYPE] for p in telemetry.points(sc.METRIC_TOKEN_USAGE)}
    assert kinds == {sc.TOKEN_TYPE_INPUT}


def test_a_fault_in_capturing_litellms_split_never_breaks_its_pricing(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("spendmeter._litellm._MAX_PENDING", "not a number")
    response = litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="hi")

    assert response._hidden_params["response_cost"] > 0
    attributes = telemetry.span().attributes
    assert attributes[sc.GEN_AI_USAGE_COST] == response._hidden_params["response_cost"]
    assert attributes[sc.SPENDMETER_COST_OTHER] == attributes[sc.GEN_AI_USAGE_COST]
