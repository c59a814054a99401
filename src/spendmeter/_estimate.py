"""The most one LLM call can cost, known before it is sent: what a reserving budget holds back.

The prompt is counted locally with LiteLLM's tokenizer (as ``spendmeter._tokens`` counts); the
answer is bounded by the call's ``max_tokens``/``max_completion_tokens`` (else the model's
maximum output in LiteLLM's map), times ``n``; both are priced as the call will be: at the
user's override rates, else by LiteLLM's ``cost_per_token`` (service tier and ``base_model``
included). It is an estimate, not a guarantee: a local token count can differ from the
provider's, and cache writes, which some providers charge above plain input, are not foreseen.
``None`` when the cost cannot be bounded: no price, a price per second, or no limit on the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import litellm

from spendmeter import _litellm
from spendmeter import semconv as sc
from spendmeter._numbers import number
from spendmeter._overrides import compute_cost
from spendmeter._tokens import prompt_tokens
from spendmeter._usage import TokenUsage
from spendmeter.pricing import Pricer, base_model_of

# A search unit covers one query over up to this many documents (Cohere's and LiteLLM's rule).
_DOCUMENTS_PER_SEARCH_UNIT = 100
# No bound up front: priced by what comes back (seconds of audio or video, characters, pages,
# a search provider's own rates, the tokens a provider counts in a decision's or extraction's
# state, images, audio and video), or not priced by LiteLLM at all (image variations, video
# edits and extensions).
_NO_BOUND_UP_FRONT = frozenset(
    {
        sc.OPERATION_DECISIONS,
        sc.OPERATION_SYSTEMONE,
        sc.OPERATION_EXTRACTION,
        sc.OPERATION_TRANSCRIPTION,
        sc.OPERATION_SPEECH,
        sc.OPERATION_VIDEO_GENERATION,
        sc.OPERATION_VIDEO_REMIX,
        sc.OPERATION_VIDEO_EDIT,
        sc.OPERATION_VIDEO_EXTENSION,
        sc.OPERATION_OCR,
        sc.OPERATION_SEARCH,
        sc.OPERATION_IMAGE_VARIATION,
    }
)


def worst_case_cost(
    pricer: Pricer, model: str, provider: str, operation: str, params: Mapping[str, Any]
) -> float | None:
    if operation in (sc.OPERATION_IMAGE_GENERATION, sc.OPERATION_IMAGE_EDIT):
        return _litellm.image_cost(base_model_of(params) or model, provider, params)
    if operation == sc.OPERATION_RERANK:
        return _rerank_worst_case(base_model_of(params) or model, provider, params)
    if operation in _NO_BOUND_UP_FRONT:
        return None
    override = pricer.overrides.resolve(model, provider)
    if override is not None and override.per_second is not None:
        return None
    embedding = operation == sc.OPERATION_EMBEDDINGS
    input_tokens = prompt_tokens(model, params)
    output_tokens = 0 if embedding else _output_tokens(model, provider, params)
    if input_tokens is None or output_tokens is None:
        return None
    if override is not None and override.base_model is None:
        usage = TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens)
        return compute_cost(override, usage).total
    priced_as = (override.base_model if override is not None else None) or (
        base_model_of(params) or model
    )
    return _litellm_cost(priced_as, provider, params, input_tokens, output_tokens, embedding)


def _litellm_cost(
    model: str,
    provider: str,
    params: Mapping[str, Any],
    input_tokens: int,
    output_tokens: int,
    embedding: bool,
) -> float | None:
    tier = params.get("service_tier")
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model,
            custom_llm_provider=provider,
            prompt_tokens=input_tokens,
            completion_tokens=output_tokens,
            call_type="embedding" if embedding else "completion",
            service_tier=tier if isinstance(tier, str) else None,
        )
    except Exception:  # LiteLLM raises a bare Exception for a model it cannot price
        return None
    total = float(prompt_cost + completion_cost)
    if total == 0 and not _litellm.prices_anything(model, provider):
        return None  # an entry without a price field: unpriced, not free
    return total


def _output_tokens(model: str, provider: str, params: Mapping[str, Any]) -> int | None:
    limits = [
        limit
        for limit in map(
            _limit,
            (
                params.get("max_tokens"),
                params.get("max_completion_tokens"),
                params.get("max_output_tokens"),  # the Responses API's name
            ),
        )
        if limit is not None
    ]
    limit = max(limits) if limits else _max_output_tokens(model, provider)
    if limit is None:
        return None
    return limit * (_limit(params.get("n")) or 1)


def _max_output_tokens(model: str, provider: str) -> int | None:
    try:
        info = litellm.get_model_info(model=model, custom_llm_provider=provider)
    except Exception:  # LiteLLM raises a bare Exception for an unmapped model
        return None
    return _limit(info.get("max_output_tokens"))


def _rerank_worst_case(model: str, provider: str, params: Mapping[str, Any]) -> float | None:
    documents = params.get("documents")
    count = len(documents) if isinstance(documents, (list, tuple)) else 0
    units = max(1, -(-count // _DOCUMENTS_PER_SEARCH_UNIT))
    cost = _litellm.search_cost(model, provider, units)
    return cost if cost else None  # no price: unbounded, never a free reservation


def _limit(value: object) -> int | None:
    """A token or choice count a call gives: a whole number >= 0."""
    found = number(value)
    return found if type(found) is int and found >= 0 else None
