"""``LiteLLMInstrumentor``: wraps LiteLLM's paid calls on instrument, unwraps on uninstrument."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Collection, Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from spendmeter import config
from spendmeter import semconv as sc
from spendmeter._attributes import Operation
from spendmeter.version import __version__

if TYPE_CHECKING:
    from spendmeter._call import Telemetry

logger = logging.getLogger("spendmeter")

_INSTRUMENTS = ("litellm >= 1.106.2, != 1.107.*",)

# (function on the `litellm` module, operation name, function whose signature binds its args)
_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("completion", sc.OPERATION_CHAT, "completion"),
    ("acompletion", sc.OPERATION_CHAT, "acompletion"),
    ("embedding", sc.OPERATION_EMBEDDINGS, "embedding"),
    ("aembedding", sc.OPERATION_EMBEDDINGS, "embedding"),
    ("text_completion", sc.OPERATION_TEXT_COMPLETION, "text_completion"),
    ("atext_completion", sc.OPERATION_TEXT_COMPLETION, "text_completion"),
)


def _positional_names(function: Any) -> tuple[str, ...]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind in kinds
    )


def _operations(litellm: Any) -> list[Operation]:
    """Describe each target once, so no call ever inspects a signature."""
    return [
        Operation(
            function=function,
            name=operation,
            positional=_positional_names(getattr(litellm, binder)),
            is_async=inspect.iscoroutinefunction(getattr(litellm, function)),
        )
        for function, operation, binder in _TARGETS
    ]


class LiteLLMInstrumentor(BaseInstrumentor):
    """Turns every LiteLLM call into a GenAI span with tokens and cost, and records metrics.

    ``instrument(tracer_provider=None, meter_provider=None, pricing=None)``: the providers
    default to the global ones; ``pricing`` is a path to a YAML/JSON file, or a mapping, of
    price overrides keyed by model name (``SPENDMETER_PRICING_FILE`` when not given).
    """

    _budget: Any = None
    _telemetry: Telemetry | None = None  # while instrumented: caches, for tests

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        # LiteLLM, and what needs it, is imported only now: `import spendmeter` stays cheap,
        # and works where LiteLLM is not installed (the dependency check reports that).
        import litellm

        from spendmeter._call import Telemetry
        from spendmeter._wrappers import async_wrapper, sync_wrapper
        from spendmeter.metrics import create_instruments
        from spendmeter.pricing import Pricer, load_overrides

        settings = config.from_env()
        pricing: str | PathLike[str] | Mapping[str, Any] | None = kwargs.get("pricing")
        overrides = load_overrides(pricing if pricing is not None else settings.pricing_file)
        tracer_provider = kwargs.get("tracer_provider")
        tracer = trace.get_tracer(__name__, __version__, tracer_provider)
        meter = metrics.get_meter(__name__, __version__, kwargs.get("meter_provider"))
        telemetry = Telemetry(
            tracer,
            create_instruments(meter),
            Pricer(overrides),
            metadata_keys=settings.metadata_keys,
            capture_content=settings.capture_content,
        )
        self._telemetry = telemetry
        for operation in _operations(litellm):
            make = async_wrapper if operation.is_async else sync_wrapper
            wrap_function_wrapper(litellm, operation.function, make(telemetry, operation))
        if settings.budget is not None:
            self._budget = _install_budget(
                settings.budget, tracer_provider, kwargs.get("meter_provider")
            )

    def _uninstrument(self, **kwargs: Any) -> None:
        import litellm

        for function, _, _ in _TARGETS:
            unwrap(litellm, function)
        if self._telemetry is not None:
            self._telemetry.pricer.close()
        self._telemetry = None
        if self._budget is not None:
            self._budget.shutdown()
            self._budget = None


def _install_budget(
    settings: config.BudgetSettings, tracer_provider: Any, meter_provider: Any
) -> Any:
    from spendmeter.budget import BudgetSpanProcessor

    processor = BudgetSpanProcessor.from_settings(settings, meter_provider=meter_provider)
    provider = tracer_provider or trace.get_tracer_provider()
    add = getattr(provider, "add_span_processor", None)
    if add is not None:
        add(processor)
    return processor
