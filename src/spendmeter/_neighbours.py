"""Living beside other GenAI instrumentations without counting a call twice.

LiteLLM sends some calls through a provider's SDK (``azure/`` through the openai SDK's
``create()``), which another instrumentation may watch as well: the same call would make two
spans and two sets of ``gen_ai.client.*`` points. For as long as a call runs, spendmeter puts in
its context the signals that other GenAI instrumentations honour to step aside for an outer one:

- ``suppress_language_model_instrumentation``: Traceloop's (OpenLLMetry) provider-SDK
  instrumentations skip a call made while it is set;
- ``opentelemetry-util-genai`` >= 1.3 (when installed) makes an inference or embedding nested in
  an active one of its kind a suppressed invocation: no span, no metrics.

Never the generic ``suppress_instrumentation`` key: it would also drop the app's HTTP spans.

An instrumentation that honours none of them is looked for once, at the first call, and named in
one warning that says what it counts twice or breaks, and how to turn it off.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

logger = logging.getLogger("spendmeter")

# opentelemetry.semconv_ai.SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY: a plain string key,
# read by Traceloop's instrumentations with context.get_value().
TRACELOOP_SUPPRESS_KEY = "suppress_language_model_instrumentation"


def _util_genai_signals() -> dict[str, object]:
    """util-genai's own context keys, each holding what marks an active invocation of its kind;
    none when util-genai is absent or older than 1.3 (which suppressed nothing)."""
    try:
        from opentelemetry.util.genai.invocation import (
            CLIENT_EMBEDDING_CONTEXT_KEY,
            CLIENT_INFERENCE_CONTEXT_KEY,
            EmbeddingData,
            InferenceData,
        )
    except ImportError:
        return {}

    # A suppressed invocation merges what it saw into the outer one's data. spendmeter reads
    # the call from LiteLLM, so it keeps none of that: one instance then serves every call,
    # concurrent ones included, and never grows.
    class _Discarding(InferenceData):  # type: ignore[misc]  # util-genai is untyped
        def merge(self, other: Any, *, overwrite: bool = True) -> None:
            return None

    class _DiscardingEmbedding(EmbeddingData):  # type: ignore[misc]
        def merge(self, other: Any, *, overwrite: bool = True) -> None:
            return None

    return {
        CLIENT_INFERENCE_CONTEXT_KEY: _Discarding(),
        CLIENT_EMBEDDING_CONTEXT_KEY: _DiscardingEmbedding(),
    }


def suppression_signals() -> Mapping[str, object]:
    """Every signal a call's context carries; built once, at instrument time."""
    return {TRACELOOP_SUPPRESS_KEY: True, **_util_genai_signals()}


# The key the API keeps the current span under, read once from the public function that sets
# it: a call's context is then built in one copy of the current one, as the span alone is.
(_SPAN_KEY,) = trace.set_span_in_context(trace.INVALID_SPAN, Context())


def call_context(span: Span, signals: Mapping[str, object]) -> Context:
    """The context a call runs in: its span current, other GenAI instrumentations stepping
    aside (``trace.set_span_in_context`` with the signals, in one copy)."""
    return Context({**otel_context.get_current(), **signals, _SPAN_KEY: span})


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A provider-SDK instrumentation that does not step aside for spendmeter."""

    module: str  # where its instrumentor lives; looked up only if the app imported it
    instrumentor: str
    distribution: str
    entry_point: str  # its name in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
    effect: str


# What was found by reading each one's source and running it beside spendmeter; Traceloop's
# opentelemetry-instrumentation-openai honours the suppression key on every openai SDK call
# LiteLLM makes (chat, completions, embeddings, images), so it is not here.
NEIGHBOURS: tuple[Neighbour, ...] = (
    Neighbour(
        module="opentelemetry.instrumentation.openai_v2",
        instrumentor="OpenAIInstrumentor",
        distribution="opentelemetry-instrumentation-openai-v2",
        entry_point="openai",
        # Its chat path follows util-genai's suppression only with util-genai >= 1.3, which no
        # release of it imports beside; its embeddings and stream wrappers follow nothing.
        effect=(
            "the LiteLLM calls that go through the openai SDK (azure/ chat, text completion and "
            "embeddings) get a second span and are recorded a second time in "
            "gen_ai.client.operation.duration and gen_ai.client.token.usage, under the "
            "deployment's model name and provider 'openai'; and azure/ streams and embeddings "
            "fail, as it replaces the raw SDK response that LiteLLM reads"
        ),
    ),
)


def active_neighbours() -> list[Neighbour]:
    """The listed instrumentations instrumented in this process now."""
    found = []
    for neighbour in NEIGHBOURS:
        module = sys.modules.get(neighbour.module)  # never imported here: only if the app did
        cls = getattr(module, neighbour.instrumentor, None)
        # BaseInstrumentor is a singleton kept on its class; reading it creates nothing.
        instance = vars(cls).get("_instance") if isinstance(cls, type) else None
        if getattr(instance, "is_instrumented_by_opentelemetry", False) is True:
            found.append(neighbour)
    return found


def warn_about_neighbours() -> None:
    for neighbour in active_neighbours():
        logger.warning(
            "spendmeter: %s is active beside spendmeter and does not step aside for it: %s. "
            "spendmeter already meters these calls; turn the other one off with "
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=%s (zero-code), or do not call its %s()"
            ".instrument(). See the README, 'Beside other instrumentations'.",
            neighbour.distribution,
            neighbour.effect,
            neighbour.entry_point,
            neighbour.instrumentor,
        )
