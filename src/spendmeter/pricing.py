"""The pricing rules of DESIGN.md section 4: each finished call priced once, first match wins.

1. the user's override for the model asked for (``pricing=`` / ``SPENDMETER_PRICING_FILE``),
   source ``override``: the only prices spendmeter computes itself (``_overrides.py``);
2. a cost the provider reported on the response (OpenRouter's ``usage.cost``, a LiteLLM proxy's
   ``x-litellm-response-cost`` header), source ``provider``;
3. LiteLLM's own figure: the ``response_cost`` LiteLLM put on the response, or a stream's final
   cost; else ``litellm.completion_cost`` with the call's own context (call type, provider,
   ``base_model``, service tier, region), source ``litellm``;
4. otherwise unpriced: no cost at all, never $0. LiteLLM answers 0.0 for a model whose map
   entry has no price field; such a 0.0 is unpriced too.

The parts of a cost (input, output, cache reads, cache writes, other) are LiteLLM's own split,
which it makes while pricing the response (``_litellm.BreakdownCapture``); they always add up
to the total, ``other`` holding what is none of the token parts (tools, surcharges, uplifts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import litellm

from spendmeter import _litellm
from spendmeter import semconv as sc
from spendmeter._fields import field
from spendmeter._numbers import amount
from spendmeter._overrides import (
    Cost,
    Price,
    PriceResolver,
    compute_cost,
    load_overrides,
)
from spendmeter._usage import TokenUsage, token_usage
from spendmeter.config import PricingConfigError

__all__ = ["Cost", "Priced", "Pricer", "PricingConfigError", "load_overrides"]

logger = logging.getLogger("spendmeter")

# Two figures of one price agree to this relative precision: LiteLLM's split carries the total
# it split, which must be the total we report for the split to be used.
_SAME = 1e-9
# Below this share of the total, what the parts leave over is rounding, not a charge.
_ROUNDING = 1e-12
# Call types LiteLLM answers 0.0 for whatever its map holds: image_variation is none of the
# image call types its calculator knows, and a video edit's or extension's response carries no
# duration to price. A 0.0 for them is no price.
_ZERO_IS_NO_PRICE = frozenset(
    {
        "image_variation", "aimage_variation",
        "video_edit", "avideo_edit",
        "video_extension", "avideo_extension",
    }
)  # fmt: skip


class Priced(NamedTuple):  # a tuple: made on every call, and cheap to make
    """The price of one call: ``total`` and ``parts`` in USD, ``None`` when unpriced."""

    status: str
    total: float | None = None
    parts: Cost | None = None
    source: str | None = None
    model: str | None = None


UNPRICED = Priced(sc.PRICING_UNPRICED)


class Pricer:
    """Prices finished calls. Made at instrument time; :meth:`close` at uninstrument time."""

    def __init__(self, overrides: Mapping[str, Mapping[str, object]] | None = None) -> None:
        self.overrides = PriceResolver(overrides)
        self._splits = _litellm.BreakdownCapture()
        self._splits.install()

    def close(self) -> None:
        self._splits.uninstall()

    def price(
        self,
        call_type: str,
        model: str,
        provider: str | None,
        kwargs: Mapping[str, Any],
        response: Any,
        duration_s: float,
        *,
        usage: TokenUsage | None = None,
        stream: Any = None,
    ) -> Priced:
        """The price of one finished call.

        ``call_type`` is the LiteLLM function called (``"completion"``, ``"aembedding"``, ...),
        ``model`` the model asked for and ``provider`` LiteLLM's provider for it, ``kwargs``
        the call's arguments. ``response`` is what LiteLLM returned; for a stream, the chunk
        that carried the usage (with ``stream``, LiteLLM's stream object, which knows the call's
        id) or, without usage, the response assembled from the chunks.
        ``usage`` saves reading the response's token counts again when the caller has them.
        """
        if usage is None:
            usage = token_usage(field(response, "usage"))
        override = self.overrides.resolve(model, provider)
        if override is not None:
            return self._override(
                override, call_type, provider, kwargs, response, usage, duration_s
            )
        hidden = _litellm.hidden_params(response)
        # A stream's usage.cost may be LiteLLM's own bill, written there at the end of the stream.
        reported = _litellm.provider_reported_cost(
            response, hidden, provider, usage_cost=stream is None
        )
        if reported is not None:
            return Priced(
                sc.PRICING_PRICED,
                reported,
                parts(reported, self._split(hidden, stream)),
                sc.SOURCE_PROVIDER,
                _priced_model(model, provider, kwargs, response),
            )
        return self._litellm(call_type, model, provider, kwargs, response, hidden, stream)

    # --- rule 1 -----------------------------------------------------------------------------
    def _override(
        self,
        price: Price,
        call_type: str,
        provider: str | None,
        kwargs: Mapping[str, Any],
        response: Any,
        usage: TokenUsage | None,
        duration_s: float,
    ) -> Priced:
        if price.base_model is not None:
            context = _context(price.base_model, provider, kwargs)
            priced = _calculated(response, call_type, context)
            if priced is None:
                return UNPRICED
            total, split = priced
            return Priced(
                sc.PRICING_PRICED, total, parts(total, split), sc.SOURCE_OVERRIDE, price.model
            )
        if usage is None and price.per_second is None:
            return UNPRICED
        cost = compute_cost(price, usage or TokenUsage(), duration_s=duration_s)
        return Priced(sc.PRICING_PRICED, cost.total, cost, sc.SOURCE_OVERRIDE, price.model)

    # --- rule 3 -----------------------------------------------------------------------------
    def _litellm(
        self,
        call_type: str,
        model: str,
        provider: str | None,
        kwargs: Mapping[str, Any],
        response: Any,
        hidden: Mapping[str, Any] | None,
        stream: Any,
    ) -> Priced:
        total = None if hidden is None else amount(hidden.get("response_cost"))
        if total is not None:  # LiteLLM's own figure, and the split it made of it
            split = self._split(hidden, stream)
        else:
            # No figure came with the response: LiteLLM's calculator, told what the call was.
            priced = _calculated(response, call_type, _context(model, provider, kwargs), stream)
            if priced is None:
                return UNPRICED
            total, split = priced
        priced_model = _priced_model(model, provider, kwargs, response)
        if total == 0 and (
            call_type in _ZERO_IS_NO_PRICE or not _prices_anything((priced_model, model), provider)
        ):
            return UNPRICED
        return Priced(
            sc.PRICING_PRICED, total, parts(total, split), sc.SOURCE_LITELLM, priced_model
        )

    def _split(self, hidden: Mapping[str, Any] | None, stream: Any) -> Mapping[str, Any] | None:
        """LiteLLM's split of this call's cost, when it made one. A stream's chunks do not
        carry the call id; its logging object does."""
        if stream is not None:
            call_id = getattr(_litellm.stream_logging_obj(stream), "litellm_call_id", None)
        elif hidden is not None:
            call_id = hidden.get("litellm_call_id")
        else:
            return None
        return self._splits.take(call_id)


def parts(total: float, split: Mapping[str, Any] | None) -> Cost:
    """The parts of ``total`` from LiteLLM's split of it; all of it ``other`` without one.

    LiteLLM's input cost includes what cache reads and writes cost; here they are parts of their
    own. The parts always add up to ``total``: when LiteLLM's token parts come to more (a
    discount it applied after splitting), they shrink in proportion; a leftover that is only
    rounding goes to the largest part, so that no part is a speck of negative or positive noise.
    """
    if split is None or not _agrees(_number(split.get("total_cost")), total):
        return Cost(total, 0.0, 0.0, 0.0, 0.0, total)
    cache_read = _number(split.get("cache_read_cost"))
    cache_write = _number(split.get("cache_creation_cost"))
    token_parts = [
        max(_number(split.get("input_cost")) - cache_read - cache_write, 0.0),
        _number(split.get("output_cost")),
        cache_read,
        cache_write,
    ]
    counted = sum(token_parts)
    if counted > total:
        scale = total / counted
        token_parts = [part * scale for part in token_parts]
    other = total - sum(token_parts)
    if abs(other) <= total * _ROUNDING:
        largest = max(range(4), key=token_parts.__getitem__)
        token_parts[largest] = max(token_parts[largest] + other, 0.0)
        other = 0.0
    input_cost, output_cost, cache_read, cache_write = token_parts
    return Cost(total, input_cost, output_cost, cache_read, cache_write, max(other, 0.0))


def _calculated(
    response: Any, call_type: str, context: Mapping[str, Any], stream: Any = None
) -> tuple[float, Mapping[str, Any] | None] | None:
    """LiteLLM's price of a response that came without one: a stream's from the stream's own
    logging object, which knows the call; any other's from the calculator, told ``context``."""
    if response is None:
        return None
    try:
        if stream is not None:
            priced = _litellm.stream_price(stream, response)
            if priced is not None:
                return priced
        return _litellm.completion_cost_with_split(response, call_type, **context)
    except Exception as error:  # LiteLLM raises a bare Exception for a model it cannot price
        logger.debug("spendmeter: LiteLLM cannot price this response: %s", error)
        return None


def _context(model: str, provider: str | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """What ``litellm.completion_cost`` needs to know of the call, as LiteLLM itself passes it."""
    context: dict[str, Any] = {"model": model, "custom_llm_provider": provider}
    base_model = base_model_of(kwargs)
    if base_model is not None:
        context["base_model"] = base_model
    tier = kwargs.get("service_tier")
    if isinstance(tier, str):
        # As a request parameter: LiteLLM lets the tier the response says it served win.
        context["optional_params"] = {"service_tier": tier}
    region = kwargs.get("aws_region_name")
    if isinstance(region, str):
        context["region_name"] = region
    location = kwargs.get("vertex_location")
    if isinstance(location, str):  # Vertex AI's regional-endpoint uplift
        context["vertex_location"] = location
    return context


# Where a call can name the base model it is priced as.
_BASE_MODEL_KEYS = frozenset({"base_model", "model_info", "metadata", "litellm_params"})


def base_model_of(kwargs: Mapping[str, Any]) -> str | None:
    """The ``base_model`` a call is priced as: given directly, or in ``model_info`` or the
    metadata's ``model_info``, which is where the Router and the proxy put a deployment's."""
    if _BASE_MODEL_KEYS.isdisjoint(kwargs):  # most calls: none of them
        return None
    candidates = [kwargs.get("base_model"), field(kwargs.get("model_info"), "base_model")]
    metadata = kwargs.get("metadata")
    candidates.append(field(field(metadata, "model_info"), "base_model"))
    candidates.append(field(kwargs.get("litellm_params"), "base_model"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def _priced_model(
    model: str, provider: str | None, kwargs: Mapping[str, Any], response: Any
) -> str:
    """The model LiteLLM priced: the base model, else the model that answered when LiteLLM's
    map knows it (LiteLLM prices it first), else the model asked for."""
    base_model = base_model_of(kwargs)
    if base_model is not None:
        return base_model
    answered = field(response, "model")
    if isinstance(answered, str) and answered and answered != model:
        cost_map = litellm.model_cost
        if answered in cost_map or f"{provider}/{answered}" in cost_map:
            return answered
    return model


def _prices_anything(models: tuple[str, ...], provider: str | None) -> bool:
    return any(_litellm.prices_anything(name, provider) for name in dict.fromkeys(models))


def _agrees(split_total: float, total: float) -> bool:
    return abs(split_total - total) <= _SAME * max(abs(total), 1e-300)


def _number(value: object) -> float:
    return amount(value) or 0.0
