"""User price overrides (DESIGN.md section 4, rule 1): loading, checking, and their arithmetic.

Overrides are keyed by model name, in the shape of LiteLLM proxy ``model_info``; ``base_model``
prices a name (e.g. an Azure deployment) as a model of LiteLLM's map, with any rate given next
to it replacing that model's. This is the one place spendmeter does cost arithmetic of its own:
a price the user wrote is not one LiteLLM can compute. :func:`compute_cost` follows LiteLLM's
``generic_cost_per_token`` for the token kinds an override can price (cached reads, cache
writes, one-hour writes, reasoning, audio and image tokens, long-context rates, per-second
prices), so that an override written like a LiteLLM entry costs what LiteLLM would make of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

import litellm

from spendmeter._litellm import apply_provider_cache_read_default, map_generation
from spendmeter._numbers import amount
from spendmeter._usage import TokenUsage
from spendmeter.config import PricingConfigError

_TOKEN_RATES = ("input_cost_per_token", "output_cost_per_token")
_SECOND_RATES = ("input_cost_per_second", "output_cost_per_second")
_OVERRIDE_KEYS = (
    *_TOKEN_RATES,
    *_SECOND_RATES,
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
    "base_model",
)
# LiteLLM bills wall-clock seconds only for these modes (cost_calculator._bills_wall_clock_seconds).
_PER_SECOND_MODES = frozenset(
    {None, "audio_transcription", "chat", "completion", "embedding", "responses"}
)
# Long-context rates: a key such as input_cost_per_token_above_200k_tokens applies to every
# token of a request whose prompt exceeds the threshold. Keys for service tiers and batches
# are other prices (llm_cost_calc/utils._NON_STANDARD_THRESHOLD_SUFFIXES).
_THRESHOLD_PREFIXES = tuple(
    f"{rate}_above_"
    for rate in (*_TOKEN_RATES, "cache_read_input_token_cost", "cache_creation_input_token_cost")
)
_NON_STANDARD_SUFFIXES = (
    "_auto",
    "_flex",
    "_balanced",
    "_priority",
    "_fast",
    "_ultrafast",
    "_batches",
)
# Pricing schemes LiteLLM applies that compute_cost does not replay.
_UNSUPPORTED_SCHEMES = ("tiered_pricing", "off_peak_pricing")
_MAX_CACHED_MODELS = 4096


# --- overrides ---------------------------------------------------------------------------


def load_overrides(
    source: str | os.PathLike[str] | Mapping[str, Mapping[str, object]] | None,
) -> dict[str, dict[str, float | str]]:
    """Read and check price overrides: a ``.yaml``/``.yml``/``.json`` file, or a mapping.

    Keyed by model name; each entry holds rates in USD (``input_cost_per_token``, ...) and/or
    ``base_model``. Numbers may be written as strings (YAML reads ``3e-7`` as one). Raises
    :class:`PricingConfigError` on the first problem.
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return _checked_overrides(cast("Mapping[object, object]", source), "pricing overrides")
    if not isinstance(source, (str, os.PathLike)):
        raise PricingConfigError(
            f"pricing must be a path to a YAML/JSON file or a mapping, not {type(source).__name__}"
        )
    path = Path(os.fspath(source))
    where = f"pricing file {str(path)!r}"
    loaded = _read_pricing_file(path, where)
    # A file that prices nothing is a mistake (the wrong file, a failed write), never meant.
    if loaded is None:
        raise PricingConfigError(f"{where}: the file is empty; it must map model names to prices")
    if not isinstance(loaded, Mapping):
        raise PricingConfigError(
            f"{where}: the top level must map model names to prices, not {_kind(loaded)}"
        )
    if not loaded:
        raise PricingConfigError(f"{where}: no model is priced; it must map model names to prices")
    return _checked_overrides(loaded, where)


def _read_pricing_file(path: Path, where: str) -> object:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise PricingConfigError(f"{where}: unsupported file type; use .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PricingConfigError(f"{where}: file not found") from None
    except UnicodeDecodeError:
        raise PricingConfigError(f"{where}: not UTF-8 text") from None
    except OSError as error:
        raise PricingConfigError(f"{where}: cannot be read ({error.strerror})") from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise PricingConfigError(
                f"{where}: invalid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
            ) from None
    try:
        import yaml  # only YAML files need it: the `yaml` extra
    except ImportError:
        raise PricingConfigError(
            f"{where}: reading YAML needs PyYAML: pip install 'spendmeter[yaml]', or use .json"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PricingConfigError(f"{where}: invalid YAML: {error}") from None


def _checked_overrides(
    raw: Mapping[object, object], where: str
) -> dict[str, dict[str, float | str]]:
    checked: dict[str, dict[str, float | str]] = {}
    for model, entry in raw.items():
        if not isinstance(model, str) or not model.strip():
            raise PricingConfigError(
                f"{where}: model names must be non-empty strings, not {model!r}"
            )
        if not isinstance(entry, Mapping):
            raise PricingConfigError(
                f"{where}: model {model!r}: expected a mapping of prices, not {_kind(entry)}"
            )
        checked[model] = _checked_entry(entry, f"{where}: model {model!r}")
    return checked


def _checked_entry(entry: Mapping[object, object], where: str) -> dict[str, float | str]:
    checked: dict[str, float | str] = {}
    for key, value in entry.items():
        if not isinstance(key, str) or key not in _OVERRIDE_KEYS:
            raise PricingConfigError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(_OVERRIDE_KEYS)})"
            )
        if key == "base_model":
            if not isinstance(value, str) or not value.strip():
                raise PricingConfigError(
                    f"{where}: key 'base_model' must be a non-empty model name, not {value!r}"
                )
            checked[key] = value.strip()
            continue
        rate = amount(value)
        if rate is None:
            raise PricingConfigError(
                f"{where}: key {key!r} must be a non-negative number (USD), not {value!r}"
            )
        checked[key] = rate
    if "base_model" not in checked and not any(
        k in checked for k in (*_TOKEN_RATES, *_SECOND_RATES)
    ):
        raise PricingConfigError(
            f"{where}: no price: give {', '.join((*_TOKEN_RATES, *_SECOND_RATES))} or base_model"
        )
    return checked


def _kind(value: object) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


# --- prices ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token of each kind, every default already applied."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float
    reasoning: float
    input_audio: float
    output_audio: float
    input_image: float
    output_image: float


_NO_RATES = Rates(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Price:
    """How one model is priced.

    ``model`` is the override's name (span attribute ``spendmeter.pricing.model``). A model is
    priced per token (``rates``, replaced by ``tiers[i][1]`` when the prompt has more tokens
    than ``tiers[i][0]``), per second of the call when ``per_second`` is set, or, when
    ``base_model`` is set (an override that names a base model and no rates of its own), by
    LiteLLM's calculator as that model of LiteLLM's map.
    """

    model: str
    rates: Rates
    tiers: tuple[tuple[float, Rates], ...] = ()
    per_second: float | None = None
    base_model: str | None = None


class Cost(NamedTuple):  # a tuple: made on every call, and cheaper to make than a dataclass
    """USD of one call; the parts add up to ``total``.

    Audio and image tokens count in ``input``/``output``, reasoning in ``output``, and a
    per-second price in ``input`` (where LiteLLM puts it); ``other`` is what is none of those
    (tools, surcharges, uplifts, a figure nobody split).
    """

    total: float
    input: float
    output: float
    cache_read: float
    cache_write: float
    other: float = 0.0


def compute_cost(price: Price, usage: TokenUsage, *, duration_s: float | None = None) -> Cost:
    """The cost of one call at override rates, computed as LiteLLM computes a map entry's.

    ``duration_s`` (the call's wall-clock seconds) is needed only by per-second prices.
    """
    if price.per_second is not None:
        if duration_s is None:
            raise ValueError(f"{price.model!r} is priced per second: duration_s is required")
        spent = price.per_second * max(duration_s, 0.0)
        return Cost(spent, spent, 0.0, 0.0, 0.0)

    rates = price.rates
    prompt = usage.input_tokens
    for threshold, tier_rates in price.tiers:
        if prompt <= threshold:
            break
        rates = tier_rates

    cache_read = usage.cache_read_tokens
    cache_write = usage.cache_write_tokens
    # Cached and modality counts are subsets of the prompt; clamp them the way LiteLLM does
    # so a provider's overlapping counts are never billed twice.
    uncached = max(prompt - cache_read - cache_write, 0)
    audio_in = min(usage.input_audio_tokens, uncached)
    image_in = min(usage.input_image_tokens, uncached - audio_in)
    input_cost = (
        (uncached - audio_in - image_in) * rates.input
        + audio_in * rates.input_audio
        + image_in * rates.input_image
    )
    write_1h = min(usage.cache_write_1h_tokens, cache_write)
    write_cost = (cache_write - write_1h) * rates.cache_write + write_1h * rates.cache_write_1h
    read_cost = cache_read * rates.cache_read

    output = usage.output_tokens
    reasoning = usage.reasoning_tokens
    audio_out = usage.output_audio_tokens
    image_out = usage.output_image_tokens
    if reasoning or audio_out or image_out:
        text_out = max(output - reasoning - audio_out - image_out, 0)
        output_cost = (
            text_out * rates.output
            + reasoning * rates.reasoning
            + audio_out * rates.output_audio
            + image_out * rates.output_image
        )
    else:
        output_cost = output * rates.output

    total = input_cost + output_cost + read_cost + write_cost
    return Cost(total, input_cost, output_cost, read_cost, write_cost)


def _price_from_entry(model: str, entry: Mapping[str, object]) -> Price | None:
    """A :class:`Price` from a LiteLLM-style price entry; ``None`` when it prices nothing.

    Defaults follow LiteLLM: a missing cache rate is the input rate, a missing one-hour
    cache-write rate the cache-write rate, a missing reasoning rate the output rate.
    """
    if any(entry.get(scheme) is not None for scheme in _UNSUPPORTED_SCHEMES):
        return None
    input_rate = amount(entry.get("input_cost_per_token"))
    output_rate = amount(entry.get("output_cost_per_token"))
    if not ((input_rate or 0.0) > 0 or (output_rate or 0.0) > 0):
        per_second = _per_second_rate(entry)
        if per_second is not None:
            return Price(model, _NO_RATES, per_second=per_second)
        if input_rate is None and output_rate is None:
            return None
    input_rate = input_rate or 0.0
    if not output_rate:
        # Image models publish their output price per image token only.
        output_rate = _rate_or(entry, "output_cost_per_image_token", 0.0)
    cache_read = amount(entry.get("cache_read_input_token_cost"))
    cache_write = amount(entry.get("cache_creation_input_token_cost"))
    cache_write_1h = amount(entry.get("cache_creation_input_token_cost_above_1hr"))
    rates = _rates(entry, input_rate, output_rate, cache_read, cache_write, cache_write_1h)

    tiers: list[tuple[float, Rates]] = []
    for label, threshold in _thresholds(entry):
        input_rate = _tier_rate(entry, "input_cost_per_token", label, input_rate) or 0.0
        output_rate = _tier_rate(entry, "output_cost_per_token", label, output_rate) or 0.0
        cache_read = _tier_rate(entry, "cache_read_input_token_cost", label, cache_read)
        cache_write = _tier_rate(entry, "cache_creation_input_token_cost", label, cache_write)
        cache_write_1h = _tier_rate(
            entry, "cache_creation_input_token_cost_above_1hr", label, cache_write_1h
        )
        tier = _rates(entry, input_rate, output_rate, cache_read, cache_write, cache_write_1h)
        tiers.append((threshold, tier))
    return Price(model, rates, tuple(tiers))


def _rates(
    entry: Mapping[str, object],
    input_rate: float,
    output_rate: float,
    cache_read: float | None,
    cache_write: float | None,
    cache_write_1h: float | None,
) -> Rates:
    cache_write = input_rate if cache_write is None else cache_write
    return Rates(
        input=input_rate,
        output=output_rate,
        cache_read=input_rate if cache_read is None else cache_read,
        cache_write=cache_write,
        cache_write_1h=cache_write if cache_write_1h is None else cache_write_1h,
        reasoning=_rate_or(entry, "output_cost_per_reasoning_token", output_rate),
        input_audio=_rate_or(entry, "input_cost_per_audio_token", input_rate),
        output_audio=_rate_or(entry, "output_cost_per_audio_token", output_rate),
        input_image=_rate_or(entry, "input_cost_per_image_token", input_rate),
        output_image=_rate_or(entry, "output_cost_per_image_token", output_rate),
    )


def _per_second_rate(entry: Mapping[str, object]) -> float | None:
    if entry.get("mode") not in _PER_SECOND_MODES:
        return None
    for key in ("cost_per_second", *_SECOND_RATES):
        rate = amount(entry.get(key))
        if rate is not None:
            return rate
    return None


def _thresholds(entry: Mapping[str, object]) -> list[tuple[str, float]]:
    """The long-context thresholds of an entry, lowest first, as (label, tokens)."""
    found: dict[str, float] = {}
    for key, value in entry.items():
        if (
            value is None
            or not key.startswith(_THRESHOLD_PREFIXES)
            or "_tokens" not in key
            or key.endswith(_NON_STANDARD_SUFFIXES)
        ):
            continue
        label = key.rsplit("_above_", 1)[1].split("_tokens")[0]
        try:
            found[label] = float(label.replace("k", "")) * (1000 if "k" in label else 1)
        except ValueError:
            continue
    return sorted(found.items(), key=lambda item: item[1])


def _tier_rate(
    entry: Mapping[str, object], rate: str, label: str, below: float | None
) -> float | None:
    found = amount(entry.get(f"{rate}_above_{label}_tokens"))
    return below if found is None else found


def _rate_or(entry: Mapping[str, object], key: str, default: float) -> float:
    found = amount(entry.get(key))
    return default if found is None else found


# --- resolution --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolved:
    price: Price | None
    # The LiteLLM map entry the price was read from, and a copy of it as read: an entry
    # changed in place since (litellm.model_cost[key][...] = ...) no longer equals its copy.
    entry: Mapping[str, object] | None = None
    snapshot: Mapping[str, object] | None = None

    def is_current(self) -> bool:
        return self.entry is None or self.entry == self.snapshot


class PriceResolver:
    """Finds the user's override for a model, as a :class:`Price`; ``None`` when there is none.

    What a model resolves to is cached per (model, provider) and dropped whenever LiteLLM's
    map changes (``register_model``, a reload, an added key, an entry edited in place), so an
    override's ``base_model`` always reflects the map as it stands at call time. Thread-safe:
    the worst a race can do is resolve a model twice.
    """

    def __init__(self, overrides: Mapping[str, Mapping[str, object]] | None = None) -> None:
        self._overrides = load_overrides(overrides)
        self._resolved: dict[tuple[str, str | None], _Resolved] = {}
        self._map_version: tuple[int, int, int] | None = None

    def resolve(self, model: str, provider: str | None) -> Price | None:
        """The override price of ``model`` as called through LiteLLM ``provider``."""
        if not self._overrides:
            return None
        model_cost = litellm.model_cost
        version = (id(model_cost), len(model_cost), map_generation())
        if version != self._map_version or len(self._resolved) > _MAX_CACHED_MODELS:
            self._resolved = {}
            self._map_version = version
        key = (model, provider)
        resolved = self._resolved.get(key)
        if resolved is None or not resolved.is_current():
            resolved = self._resolved[key] = self._resolve(model, provider)
        return resolved.price

    def _resolve(self, model: str, provider: str | None) -> _Resolved:
        name = self._override_name(model, provider)
        if name is None:
            return _Resolved(None)
        override = self._overrides[name]
        rates = {key: value for key, value in override.items() if key != "base_model"}
        base_model = override.get("base_model")
        if not isinstance(base_model, str):
            return _Resolved(_price_from_entry(name, rates))
        base_provider = None if _has_provider_prefix(base_model) else provider
        key = _litellm_key(base_model, base_provider)
        entry = None if key is None else litellm.model_cost.get(key)
        if entry is None:
            return _Resolved(_price_from_entry(name, rates))
        if not rates:
            # Priced as LiteLLM prices the base model, by LiteLLM's own calculator.
            return _Resolved(Price(name, _NO_RATES, base_model=key), entry, dict(entry))
        base = _with_provider_defaults(entry, base_provider)
        return _Resolved(_price_from_entry(name, {**base, **rates}), entry, dict(entry))

    def _override_name(self, model: str, provider: str | None) -> str | None:
        """The override for ``model``, written with or without its ``provider/`` prefix."""
        if model in self._overrides:
            return model
        if provider:
            prefix = f"{provider}/"
            other = model.removeprefix(prefix) if model.startswith(prefix) else prefix + model
        elif _has_provider_prefix(model):
            other = model.split("/", 1)[1]
        else:
            return None
        return other if other in self._overrides else None


def _with_provider_defaults(
    entry: Mapping[str, object], provider: str | None
) -> Mapping[str, object]:
    """The entry with the rates LiteLLM assumes for a provider (e.g. Fireworks' cache reads)."""
    called_through = provider or entry.get("litellm_provider")
    if not isinstance(called_through, str):
        return entry
    defaults: Mapping[str, object] = apply_provider_cache_read_default(entry, called_through)
    return defaults


def _litellm_key(model: str, provider: str | None) -> str | None:
    """The key of ``litellm.model_cost`` that LiteLLM's cost calculator reads for this model.

    ``get_model_info`` tries ``provider/model``, the bare model, dated and fine-tuned names,
    case-insensitively, and checks the entry's provider; it is slow, hence the cache above.
    """
    try:
        info = litellm.get_model_info(model=model, custom_llm_provider=provider)
    except Exception:  # LiteLLM raises a bare Exception for an unmapped model
        return None
    key = info.get("key")
    return key if isinstance(key, str) else None


def _has_provider_prefix(model: str) -> bool:
    head, slash, _ = model.partition("/")
    return bool(slash) and head in litellm.provider_list
