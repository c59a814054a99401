"""Everything spendmeter reads out of LiteLLM that LiteLLM does not export: kept in one place.

Each private name below is here for one reason, and works on every LiteLLM version the project
tests (``pyproject.toml``'s floor and the newest):

- ``Logging.set_cost_breakdown`` (``litellm.litellm_core_utils.litellm_logging``): LiteLLM splits
  the cost of a call into input, output, cache and tool parts while it prices the response, and
  keeps that split only on its per-call logging object, which the caller never sees. Wrapping
  the method records each split under the call's ``litellm_call_id`` (which the response
  carries), so the parts of a span are LiteLLM's own, at no extra pricing work per call.
- ``Logging.uncached_price``: a stream's response that carries no cost of LiteLLM's (assembled
  from its chunks, or a local count) is priced by the stream's own logging object, as LiteLLM
  prices a stream's rounds itself: it holds the call's context (per-call and deployment prices
  among it), which ``litellm.completion_cost`` cannot be told, and it records nothing.
- ``Logging`` itself: when a response of any other call carries no cost of LiteLLM's,
  ``litellm.completion_cost`` is handed a fresh logging object so that it leaves its split
  there too: one calculator call gives both the total and its parts.
- ``apply_provider_cache_read_default`` (``litellm.litellm_core_utils.llm_cost_calc.utils``): an
  override that names a ``base_model`` and rates of its own is priced by spendmeter on the base
  model's entry as LiteLLM reads it, provider defaults included (e.g. Fireworks' cache reads).
- ``get_model_cost_mutation_generation`` (``litellm.utils``): counts in-place edits of LiteLLM's
  price map, so that an override's cached base entry is read again after ``register_model``.
- ``_cost_map_entry_prices_anything`` (``litellm.cost_calculator``): LiteLLM answers 0.0 for a
  model whose map entry has no price field at all; this is LiteLLM's own test of whether an entry
  prices anything, which tells such a 0.0 (unpriced) from a model priced at zero (free).
- ``default_image_cost_calculator`` and ``rerank_cost`` (``litellm.cost_calculator``): what
  LiteLLM charges for images of a size and quality, and for a rerank's search units, before the
  call is sent: the worst case a reserving budget holds back for those call types.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import litellm
import wrapt
from litellm.cost_calculator import (
    _cost_map_entry_prices_anything,
    default_image_cost_calculator,
    rerank_cost,
)
from litellm.litellm_core_utils.litellm_logging import Logging
from litellm.litellm_core_utils.llm_cost_calc.utils import (
    apply_provider_cache_read_default as apply_provider_cache_read_default,
)
from litellm.utils import get_model_cost_mutation_generation
from opentelemetry.instrumentation.utils import unwrap

from spendmeter._fields import field, fields, private
from spendmeter._numbers import amount

# How a proxy (or a provider LiteLLM knows reports its own cost) states the cost of a response:
# LiteLLM keeps the provider's headers in `_hidden_params["additional_headers"]` with this prefix.
RESPONSE_COST_HEADER = "llm_provider-x-litellm-response-cost"
# Newer LiteLLM writes its own bill into a stream's `usage.cost` and moves the upstream's figure
# here; its presence says whether `usage.cost` is the provider's.
UPSTREAM_USAGE_COST = "upstream_usage_cost"
# Providers whose `usage.cost` LiteLLM does not take as their bill (it prices their usage fields).
_COST_NOT_BILLED = frozenset({"xai", "perplexity", "opencode_go"})
# Splits not yet read (calls spendmeter did not finish, LiteLLM's own re-pricing) are dropped
# past this many, so that memory stays bounded.
_MAX_PENDING = 1024


class BreakdownCapture:
    """LiteLLM's cost splits, by ``litellm_call_id``, from the moment LiteLLM makes them."""

    def __init__(self) -> None:
        self._splits: dict[str, Mapping[str, Any]] = {}
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            wrapt.wrap_function_wrapper(Logging, "set_cost_breakdown", self._record)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            unwrap(Logging, "set_cost_breakdown")
            self._installed = False
            self._splits.clear()

    def _record(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            split = instance.cost_breakdown
            call_id = instance.litellm_call_id
            if isinstance(split, Mapping) and isinstance(call_id, str):
                if len(self._splits) >= _MAX_PENDING:
                    self._splits.clear()
                self._splits[call_id] = split
        except Exception:  # never break LiteLLM's own pricing
            pass
        return result

    def take(self, call_id: object) -> Mapping[str, Any] | None:
        """The split LiteLLM last made for this call, removed: each is read once."""
        if not isinstance(call_id, str):
            return None
        return self._splits.pop(call_id, None)


def map_generation() -> int:
    return int(get_model_cost_mutation_generation())


def hidden_params(response: object) -> Mapping[str, Any] | None:
    """A response's hidden params: a dict on most responses, a pydantic ``HiddenParams`` (its
    fields and extras) on a text completion's."""
    hidden = private(response, "_hidden_params")
    if type(hidden) is dict or isinstance(hidden, Mapping):
        return hidden
    return fields(hidden)


def provider_reported_cost(
    response: object,
    hidden: Mapping[str, Any] | None,
    provider: str | None,
    *,
    usage_cost: bool = True,
) -> float | None:
    """What the provider (or a LiteLLM proxy in front of it) said this response cost;
    ``hidden`` is the response's hidden params.

    ``usage_cost=False`` reads only what cannot be LiteLLM's own figure: the cost header, and
    the upstream's ``usage.cost`` where LiteLLM set it aside.
    """
    if hidden is not None:
        headers = hidden.get("additional_headers")
        if (
            type(headers) is dict or isinstance(headers, Mapping)
        ) and RESPONSE_COST_HEADER in headers:
            return amount(headers[RESPONSE_COST_HEADER])
        if UPSTREAM_USAGE_COST in hidden:
            return amount(hidden[UPSTREAM_USAGE_COST])
    if not usage_cost or provider in _COST_NOT_BILLED:
        return None
    return amount(field(field(response, "usage"), "cost"))


def stream_logging_obj(stream: object) -> object:
    """The logging object of a LiteLLM stream (text completions wrap a chat stream): it holds the
    stream's ``litellm_call_id``, under which LiteLLM's split of the stream's cost is captured."""
    found = getattr(stream, "logging_obj", None)
    if found is None:
        found = getattr(getattr(stream, "completion_stream", None), "logging_obj", None)
    return found


def stream_price(stream: object, response: object) -> tuple[float, Mapping[str, Any] | None] | None:
    """LiteLLM's price of a stream's response (assembled from its chunks, or carrying only a
    local count), asked of the stream's own logging object: it knows what the call was (per-call
    and deployment prices, ``base_model``, tier, region) and records nothing. ``None`` when the
    stream has no such object or LiteLLM gives no figure."""
    uncached_price = getattr(stream_logging_obj(stream), "uncached_price", None)
    if uncached_price is None:
        return None
    price = uncached_price(response)
    cost, split = price.cost, price.cost_breakdown
    if cost is None:
        return None
    return float(cost), split if isinstance(split, Mapping) else None


def completion_cost_with_split(
    response: object, call_type: str, **context: Any
) -> tuple[float, Mapping[str, Any] | None]:
    """``litellm.completion_cost`` for the response, and the split it made on the way."""
    logging_obj = Logging(
        model=str(context.get("model") or ""),
        messages=[],
        stream=False,
        call_type=call_type,
        start_time=datetime.datetime.now(),
        litellm_call_id="spendmeter-pricing",
        function_id="spendmeter-pricing",
    )
    total = litellm.completion_cost(
        completion_response=response,
        call_type=call_type,
        litellm_logging_obj=logging_obj,
        **context,
    )
    split = logging_obj.cost_breakdown
    return float(total), split if isinstance(split, Mapping) else None


def prices_anything(model: str, provider: str | None) -> bool:
    """Whether LiteLLM's map entry for the model has any price field (0 included)."""
    try:
        info = litellm.get_model_info(model=model, custom_llm_provider=provider)
    except Exception:  # LiteLLM raises a bare Exception for an unmapped model
        return False
    key = info.get("key")
    entry = litellm.model_cost.get(key) if isinstance(key, str) else None
    return isinstance(entry, Mapping) and bool(_cost_map_entry_prices_anything(entry))


# The qualities LiteLLM's image prices are keyed by: a call that names none may be served at
# any of them, so its worst case is the dearest.
_IMAGE_QUALITIES = ("high", "hd", "medium", "standard", "low", None)


def image_cost(model: str, provider: str | None, params: Mapping[str, Any]) -> float | None:
    """What LiteLLM charges for the images a call asks for; ``None`` when it has no price."""
    quality = params.get("quality")
    qualities = (quality,) if isinstance(quality, str) else _IMAGE_QUALITIES
    n = params.get("n")
    size = params.get("size")
    costs = []
    for each in qualities:
        try:
            costs.append(
                default_image_cost_calculator(
                    model=model,
                    custom_llm_provider=provider,
                    quality=each,
                    n=n if isinstance(n, int) and n > 0 else 1,
                    size=size if isinstance(size, str) else None,
                )
            )
        except Exception:  # LiteLLM raises a bare Exception for a size or quality it lacks
            continue
    return max(costs) if costs else None


def search_cost(model: str, provider: str | None, search_units: int) -> float | None:
    """What LiteLLM charges for a rerank of ``search_units`` units; ``None`` without a price."""
    try:
        prompt, completion = rerank_cost(
            model=model,
            custom_llm_provider=provider,
            billed_units={"search_units": search_units},
        )
    except Exception:
        return None
    return float(prompt + completion)
