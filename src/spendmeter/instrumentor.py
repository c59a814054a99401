"""``LiteLLMInstrumentor``: wraps LiteLLM's paid calls on instrument, unwraps on uninstrument."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from types import FrameType
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from wrapt import FunctionWrapper

from spendmeter import _lifecycle, config
from spendmeter import semconv as sc
from spendmeter._attributes import Operation
from spendmeter.version import __version__

if TYPE_CHECKING:
    from spendmeter._call import Telemetry

logger = logging.getLogger("spendmeter")

_INSTRUMENTS = ("litellm >= 1.110.0",)
# The module of OpenTelemetry's auto-instrumentation (opentelemetry-instrument, or its
# initialize() called in code), which loads every instrumentation entry point in turn.
_AUTO_INSTRUMENTATION = "opentelemetry.instrumentation.auto_instrumentation"


@dataclass(frozen=True)
class Target:
    """One paid LiteLLM function and every name it is reached by.

    ``places[0]`` is where LiteLLM defines it; the other places are names that may hold the
    same function (re-exports, and the references LiteLLM's dispatch modules keep to it), all
    wrapped with one wrapper so that no route around it exists. A place absent from the
    installed LiteLLM, or holding another function (a dispatch function that calls this one),
    is left alone.
    """

    call_type: str  # LiteLLM's call type, e.g. "acompletion"
    operation: str  # gen_ai.operation.name
    places: tuple[tuple[str, str], ...]
    # The leading parameters of a function that takes only ``*args, **kwargs`` and passes them
    # on (LiteLLM's OCR dispatch, aimage_variation), so that a model passed by position is read.
    positional: tuple[str, ...] = ()


def _target(
    call_type: str, operation: str, *places: str, positional: tuple[str, ...] = ()
) -> Target:
    return Target(call_type, operation, tuple(_place(place) for place in places), positional)


def _in_package(package: str, *families: tuple[str, str]) -> tuple[Target, ...]:
    """Each family's sync and async function (``name``, ``aname``), defined in
    ``litellm.{package}.main`` and re-exported by the package and by ``litellm``."""
    return tuple(
        _target(
            call_type,
            operation,
            f"litellm.{package}.main.{call_type}",
            f"litellm.{package}.{call_type}",
            f"litellm.{call_type}",
        )
        for name, operation in families
        for call_type in (name, f"a{name}")
    )


def _place(place: str) -> tuple[str, str]:
    module, _, attribute = place.rpartition(".")
    return module, attribute


_CHAT, _TEXT, _EMBED = sc.OPERATION_CHAT, sc.OPERATION_TEXT_COMPLETION, sc.OPERATION_EMBEDDINGS
_TARGETS: tuple[Target, ...] = (
    _target(
        "completion", _CHAT, "litellm.main.completion",
        "litellm.chat_completions.dispatch._PYTHON_COMPLETION", "litellm.completion",
    ),
    _target(
        "acompletion", _CHAT, "litellm.main.acompletion",
        "litellm.chat_completions.dispatch._PYTHON_ACOMPLETION", "litellm.acompletion",
    ),
    _target("text_completion", _TEXT, "litellm.main.text_completion", "litellm.text_completion"),
    _target("atext_completion", _TEXT, "litellm.main.atext_completion", "litellm.atext_completion"),
    _target(
        "embedding", _EMBED, "litellm.main.embedding",
        "litellm.embeddings.dispatch._PYTHON_EMBEDDING", "litellm.embedding",
    ),
    _target(
        "aembedding", _EMBED, "litellm.main.aembedding",
        "litellm.embeddings.dispatch._PYTHON_AEMBEDDING", "litellm.aembedding",
    ),
    _target(
        "responses", _CHAT, "litellm.responses.main.responses",
        "litellm.responses.dispatch._PYTHON_RESPONSES",
    ),
    _target(
        "aresponses", _CHAT, "litellm.responses.main.aresponses",
        "litellm.responses.dispatch._PYTHON_ARESPONSES",
    ),
    _target(
        "image_generation", sc.OPERATION_IMAGE_GENERATION,
        "litellm.images.main.image_generation", "litellm.image_generation",
    ),
    _target(
        "aimage_generation", sc.OPERATION_IMAGE_GENERATION,
        "litellm.images.main.aimage_generation", "litellm.aimage_generation",
    ),
    _target(
        "image_edit", sc.OPERATION_IMAGE_EDIT,
        "litellm.images.main.image_edit", "litellm.image_edit",
    ),
    _target(
        "aimage_edit", sc.OPERATION_IMAGE_EDIT,
        "litellm.images.main.aimage_edit", "litellm.aimage_edit",
    ),
    _target(
        "image_variation", sc.OPERATION_IMAGE_VARIATION,
        "litellm.images.main.image_variation", "litellm.image_variation",
    ),
    _target(
        "aimage_variation", sc.OPERATION_IMAGE_VARIATION,
        "litellm.images.main.aimage_variation", "litellm.aimage_variation",
        positional=("image", "model"),
    ),
    # The Router reaches these through their packages (`litellm.videos`, `litellm.ocr`, ...).
    *_in_package(
        "videos",
        ("video_generation", sc.OPERATION_VIDEO_GENERATION),
        ("video_remix", sc.OPERATION_VIDEO_REMIX),
        ("video_edit", sc.OPERATION_VIDEO_EDIT),
        ("video_extension", sc.OPERATION_VIDEO_EXTENSION),
    ),
    _target(
        "ocr", sc.OPERATION_OCR, "litellm.ocr.dispatch.ocr", "litellm.ocr.ocr", "litellm.ocr",
        positional=("model", "document"),
    ),
    _target(
        "aocr", sc.OPERATION_OCR, "litellm.ocr.dispatch.aocr", "litellm.ocr.aocr", "litellm.aocr",
        positional=("model", "document"),
    ),
    # Questions answered about an input, and fields read out of a text, priced per token.
    *_in_package("decisions", ("decisions", sc.OPERATION_DECISIONS)),
    *_in_package("systemone", ("systemone", sc.OPERATION_SYSTEMONE)),
    *_in_package("extraction", ("extraction", sc.OPERATION_EXTRACTION)),
    *_in_package("search", ("search", sc.OPERATION_SEARCH)),
    _target(
        "transcription", sc.OPERATION_TRANSCRIPTION,
        "litellm.main.transcription", "litellm.transcription",
    ),
    _target(
        "atranscription", sc.OPERATION_TRANSCRIPTION,
        "litellm.main.atranscription", "litellm.atranscription",
    ),
    _target("speech", sc.OPERATION_SPEECH, "litellm.main.speech", "litellm.speech"),
    _target("aspeech", sc.OPERATION_SPEECH, "litellm.main.aspeech", "litellm.aspeech"),
    _target("rerank", sc.OPERATION_RERANK, "litellm.rerank_api.main.rerank", "litellm.rerank"),
    _target("arerank", sc.OPERATION_RERANK, "litellm.rerank_api.main.arerank", "litellm.arerank"),
    # The messages dispatch may run a call natively, past LiteLLM's Python handler: the
    # dispatch functions themselves are wrapped.
    _target(
        "anthropic_messages", _CHAT, "litellm.messages.dispatch.anthropic_messages",
        "litellm.messages.anthropic_messages", "litellm.anthropic_messages",
        "litellm.anthropic_interface.messages._async_anthropic_messages",
    ),
    _target(
        "anthropic_messages_handler", _CHAT, "litellm.messages.dispatch.anthropic_messages_handler",
        "litellm.messages.anthropic_messages_handler", "litellm.anthropic_messages_handler",
        "litellm.anthropic_interface.messages._sync_anthropic_messages",
    ),
)  # fmt: skip

# Functions that send one request as several attempts (retries, fallbacks): each becomes a
# request span over one span per attempt.
_RETRYING: dict[str, str] = {
    "completion_with_retries": _CHAT,
    "acompletion_with_retries": _CHAT,
    "responses_with_retries": _CHAT,
    "aresponses_with_retries": _CHAT,
}
# LiteLLM's bridge from sync code to a coroutine, which may run it on a thread of its own: in
# every LiteLLM module that imported it already, and where modules imported later find it.
_HOP = ("litellm.litellm_core_utils.asyncify", "run_async_function")


def _hop_places() -> list[tuple[str, str]]:
    found = _lookup(*_HOP)
    if found is None:
        return []
    bridge = found[1]
    holders = [
        name
        for name, module in list(sys.modules.items())
        if name.startswith("litellm.") and getattr(module, _HOP[1], None) is bridge
    ]
    return [_HOP, *((name, _HOP[1]) for name in holders if name != _HOP[0])]


# litellm.Router's endpoints that make paid calls (those this LiteLLM serves are wrapped).
_ROUTER_METHODS: dict[str, str] = {
    "completion": _CHAT, "acompletion": _CHAT,
    "text_completion": _TEXT, "atext_completion": _TEXT,
    "embedding": _EMBED, "aembedding": _EMBED,
    "responses": _CHAT, "aresponses": _CHAT,
    "image_generation": sc.OPERATION_IMAGE_GENERATION,
    "aimage_generation": sc.OPERATION_IMAGE_GENERATION,
    "aimage_edit": sc.OPERATION_IMAGE_EDIT,
    "video_generation": sc.OPERATION_VIDEO_GENERATION,
    "avideo_generation": sc.OPERATION_VIDEO_GENERATION,
    "video_remix": sc.OPERATION_VIDEO_REMIX, "avideo_remix": sc.OPERATION_VIDEO_REMIX,
    # Its sync video_edit and video_extension return None and send nothing.
    "avideo_edit": sc.OPERATION_VIDEO_EDIT, "avideo_extension": sc.OPERATION_VIDEO_EXTENSION,
    "ocr": sc.OPERATION_OCR, "aocr": sc.OPERATION_OCR,
    "decisions": sc.OPERATION_DECISIONS, "adecisions": sc.OPERATION_DECISIONS,
    "systemone": sc.OPERATION_SYSTEMONE, "asystemone": sc.OPERATION_SYSTEMONE,
    "extraction": sc.OPERATION_EXTRACTION, "aextraction": sc.OPERATION_EXTRACTION,
    "asearch": sc.OPERATION_SEARCH,  # over the Router's search tools; its `search` uses none
    "atranscription": sc.OPERATION_TRANSCRIPTION,
    "aspeech": sc.OPERATION_SPEECH,
    "arerank": sc.OPERATION_RERANK,
    "anthropic_messages": _CHAT, "aanthropic_messages": _CHAT,
}  # fmt: skip
# The Router serves its endpoints through plain functions that return a coroutine, so which
# are async is read off LiteLLM's naming; its `anthropic_messages` is async as well.
_ASYNC_ROUTER_METHODS = frozenset(name for name in _ROUTER_METHODS if name.startswith("a"))


def _positional_names(function: Any) -> tuple[str, ...]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin or an odd callable: bind keywords only
        return ()
    return tuple(name for name, p in parameters.items() if p.kind in kinds)


def _lookup(module: str, attribute: str) -> tuple[Any, Any] | None:
    """The module object and the function a place holds; ``None`` where this LiteLLM has none."""
    try:
        # import_module, not attribute access: `litellm.responses` is a function that hides
        # the package of the same name.
        holder = importlib.import_module(module)
    except ImportError:
        return None
    function = getattr(holder, attribute, None)
    return (holder, function) if callable(function) else None


class _Patches:
    """Every name spendmeter replaced, and what it held: uninstrument puts each one back."""

    def __init__(self) -> None:
        self._replaced: list[tuple[Any, str, Any]] = []

    def wrap(self, places: Iterable[tuple[str, str]], make: Callable[[Any], Any]) -> None:
        """Wrap the function at the first place found, and put the same wrapper at every other
        place that holds that very function. ``make(original)`` builds the wrapper function."""
        original: Any = None
        wrapper: FunctionWrapper[Any, Any] | None = None
        for module, attribute in places:
            found = _lookup(module, attribute)
            if found is None:
                continue
            holder, function = found
            if wrapper is None:
                original = function
                wrapper = FunctionWrapper(original, make(original))
            if function is original:
                self._set(holder, attribute, wrapper)

    def wrap_method(self, cls: Any, name: str, wrapper: Any) -> None:
        try:
            original = getattr(cls, name)
        except AttributeError:
            return  # this LiteLLM's Router has no such endpoint
        self._set(cls, name, FunctionWrapper(original, wrapper))

    def _set(self, holder: Any, attribute: str, value: Any) -> None:
        # A name the holder serves without holding it (the Router's endpoints, served by its
        # core) is put back by deleting it again, which is how the Router restores it.
        own = attribute in vars(holder)
        self._replaced.append((holder, attribute, getattr(holder, attribute) if own else _UNSET))
        setattr(holder, attribute, value)

    def restore(self) -> None:
        for holder, attribute, original in reversed(self._replaced):
            if original is _UNSET:
                delattr(holder, attribute)
            else:
                setattr(holder, attribute, original)
        self._replaced.clear()


_UNSET = object()


class LiteLLMInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # untyped base
    """Turns every LiteLLM call into a GenAI span with tokens and cost, and records metrics.

    ``instrument(tracer_provider=None, meter_provider=None, pricing=None)``: the providers
    default to the global ones; ``pricing`` is a path to a YAML/JSON file, or a mapping, of
    price overrides keyed by model name (``SPENDMETER_PRICING_FILE`` when not given).
    """

    _telemetry: Telemetry | None = None  # while instrumented: caches, for tests
    # Set in _instrument, not __init__: BaseInstrumentor is a singleton whose __init__ runs
    # again on every LiteLLMInstrumentor().
    _patches: _Patches | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def instrument(self, **kwargs: Any) -> Any:
        """Instrument LiteLLM; a configuration error raises, except under auto-instrumentation.

        There OpenTelemetry's loader would log it with two tracebacks and then skip every
        instrumentation after spendmeter: the error is logged as one line instead, and
        spendmeter stays off while the others load.
        """
        try:
            return super().instrument(**kwargs)
        except (config.ConfigError, config.PricingConfigError) as error:
            if not _loaded_by_auto_instrumentation():
                raise
            logger.error("spendmeter is off: %s", error)
            return None

    def _instrument(self, **kwargs: Any) -> None:
        # Configuration first: an error is reported before anything is imported or patched.
        settings = config.from_env()
        pricing: str | PathLike[str] | Mapping[str, Any] | None = kwargs.get("pricing")
        # LiteLLM, and what needs it, is imported only now: `import spendmeter` stays cheap,
        # and works where LiteLLM is not installed (the dependency check reports that).
        import litellm

        from spendmeter import _wrappers
        from spendmeter._call import Telemetry
        from spendmeter.metrics import create_instruments
        from spendmeter.pricing import Pricer

        overrides = _load_pricing(pricing, settings)
        tracer_provider = kwargs.get("tracer_provider")
        # Its last spans are exported on SIGTERM and when a multiprocessing worker ends, too.
        _lifecycle.track_tracer_provider(tracer_provider)
        _lifecycle.install()
        tracer = trace.get_tracer(sc.INSTRUMENTATION_SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(
            sc.INSTRUMENTATION_SCOPE, __version__, kwargs.get("meter_provider")
        )
        telemetry = Telemetry(
            tracer,
            create_instruments(meter),
            Pricer(overrides),
            tracer_provider=tracer_provider,
            metadata_keys=settings.metadata_keys,
            capture_content=settings.capture_content,
            conversation_id_key=settings.conversation_id_key,
        )
        self._telemetry = telemetry
        patches = self._patches = _Patches()
        for target in _TARGETS:
            patches.wrap(target.places, functools.partial(_call_wrapper, telemetry, target))
        for name, operation in _RETRYING.items():
            patches.wrap(
                ((module, name) for module in ("litellm.main", "litellm")),
                functools.partial(_retrying_wrapper, telemetry, operation),
            )
        patches.wrap(_hop_places(), lambda _original: _wrappers.hop_wrapper)
        for name, operation in _ROUTER_METHODS.items():
            patches.wrap_method(
                litellm.Router,
                name,
                _wrappers.request_wrapper(
                    telemetry, operation, router=True, is_async=name in _ASYNC_ROUTER_METHODS
                ),
            )
        if settings.budget is not None:
            _install_budget(settings.budget, tracer_provider, kwargs.get("meter_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._patches is not None:
            self._patches.restore()
            self._patches = None
        telemetry, self._telemetry = self._telemetry, None
        if telemetry is not None:
            telemetry.pricer.close()
            # A budget governs the calls of one instrumentation: a fresh instrument() starts
            # with none of the old budgets refusing calls.
            for budget in telemetry.budgets():
                budget.shutdown()


def _call_wrapper(telemetry: Telemetry, target: Target, original: Any) -> Any:
    from spendmeter import _wrappers

    return _wrappers.call_wrapper(telemetry, _operation(target, original))


def _retrying_wrapper(telemetry: Telemetry, operation: str, original: Any) -> Any:
    from spendmeter import _wrappers

    return _wrappers.request_wrapper(
        telemetry, operation, router=False, is_async=inspect.iscoroutinefunction(original)
    )


def _loaded_by_auto_instrumentation() -> bool:
    """Whether OpenTelemetry's auto-instrumentation loader is what called ``instrument()``."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_AUTO_INSTRUMENTATION):
            return True
        frame = frame.f_back
    return False


def _load_pricing(
    pricing: str | PathLike[str] | Mapping[str, Any] | None, settings: config.Settings
) -> dict[str, dict[str, float | str]]:
    from spendmeter.pricing import PricingConfigError, load_overrides

    if pricing is not None:
        return load_overrides(pricing)
    try:
        return load_overrides(settings.pricing_file)
    except PricingConfigError as error:
        # The file came from the environment: say which variable named it.
        raise PricingConfigError(f"{config.PRICING_FILE}: {error}") from None


def _operation(target: Target, original: Any) -> Operation:
    return Operation(
        call_type=target.call_type,
        name=target.operation,
        positional=_positional_names(original) or target.positional,
        is_async=inspect.iscoroutinefunction(original),
    )


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
