"""Every LiteLLM entry point that can cost money is metered and capped, sync and async.

Each call goes to a provider that counts what reaches it (a fake HTTP provider behind
LiteLLM's own clients, or a custom LiteLLM provider), and its cost is compared with LiteLLM's
own figure for the very same response.
"""

from __future__ import annotations

import asyncio
import gc
import io
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import litellm
import pytest
from litellm import CustomLLM, ImageResponse
from litellm.types.utils import ImageObject
from litellm.types.videos.utils import encode_video_id_with_provider
from opentelemetry.trace import SpanKind, StatusCode

from spendmeter import BudgetExceededError, BudgetSpanProcessor
from spendmeter import semconv as sc
from tests._support import MESSAGES, Telemetry, exceeded_budget, registered_provider
from tests.fake_http import FakeHTTPProvider

IMAGE_MODEL = "fakeimages/painter"
IMAGE_PRICE = 0.04  # per image


class FakeImageProvider(CustomLLM):
    """A custom LiteLLM provider that paints images and counts the requests it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def _paint(self, model_response: ImageResponse) -> ImageResponse:
        self.requests += 1
        model_response.data = [ImageObject(url="https://example.invalid/cat.png")]
        return model_response

    def image_generation(self, *args: Any, model_response: ImageResponse, **kwargs: Any) -> Any:
        return self._paint(model_response)

    async def aimage_generation(
        self, *args: Any, model_response: ImageResponse, **kwargs: Any
    ) -> Any:
        return self._paint(model_response)


@pytest.fixture
def images() -> Iterator[FakeImageProvider]:
    provider = FakeImageProvider()
    litellm.register_model(
        {
            IMAGE_MODEL: {
                "litellm_provider": "fakeimages",
                "mode": "image_generation",
                "output_cost_per_image": IMAGE_PRICE,
            }
        }
    )
    with registered_provider("fakeimages", provider):
        yield provider


@pytest.fixture
def http() -> Iterator[FakeHTTPProvider]:
    provider = FakeHTTPProvider()
    yield provider
    provider.stop()


def _audio() -> tuple[str, io.BytesIO, str]:
    return ("hello.wav", io.BytesIO(b"RIFFfake"), "audio/wav")


def _png() -> io.BytesIO:
    image = io.BytesIO(b"\x89PNGfake")
    image.name = "cat.png"  # LiteLLM uploads a file object under its name
    return image


OCR_DOCUMENT = {"type": "document_url", "document_url": "https://example.invalid/a.pdf"}
DECIDER = "fireworks_ai/accounts/fireworks/models/rune"
QUESTIONS = [{"name": "safe", "type": "predicate", "instructions": "Is it safe?"}]
SYSTEMONE_QUESTIONS = {"safe": {"type": "noul", "instructions": "Is it safe?"}}
EXTRACTOR = "cloudflare/clairic"
FIELDS = {"amount": {"type": "number"}}
# A call on a video names the video, not a model: LiteLLM writes provider and model into the ids
# of the videos it makes (OpenAI's own ids, like "video_fake", carry neither).
SORA_VIDEO = encode_video_id_with_provider("video_fake", "openai", "sora-2")


@dataclass(frozen=True)
class Case:
    """One entry point: how to call it, and what its span must say."""

    call_type: str
    operation: str
    model: str
    call: Callable[[FakeHTTPProvider], Any]  # returns the response, or an awaitable of it
    is_async: bool = False

    def __str__(self) -> str:
        return self.call_type


def twins(
    name: str,
    operation: str,
    model: str,
    arguments: Callable[[FakeHTTPProvider], dict[str, Any]],
    *,
    client: bool = True,
) -> list[Case]:
    """The cases of ``litellm.{name}`` and ``litellm.a{name}``, called with the same
    ``arguments(h)``, each through the fake's client of its kind (``client=False``: a call that
    takes none, sent to the fake's loopback server)."""

    def case(call_type: str, is_async: bool) -> Case:
        def call(h: FakeHTTPProvider) -> Any:
            sent_through = {"client": h.client(name, is_async)} if client else {}
            return getattr(litellm, call_type)(**arguments(h), **sent_through)

        return Case(call_type, operation, model, call, is_async)

    return [case(name, False), case(f"a{name}", True)]


CASES = [
    *twins(
        "responses",
        "chat",
        "openai/gpt-4o-mini",
        lambda h: {"model": "openai/gpt-4o-mini", "input": "hi", "api_key": "sk-fake"},
    ),
    *twins(
        "image_edit",
        "image_edit",
        "openai/gpt-image-1",
        lambda h: {
            "image": _png(),
            "prompt": "a hat",
            "model": "openai/gpt-image-1",
            "api_key": "sk-fake",
        },
    ),
    *twins(
        "video_generation",
        "video_generation",
        "openai/sora-2",
        lambda h: {
            "prompt": "a cat",
            "model": "openai/sora-2",
            "seconds": "4",
            "api_key": "sk-fake",
        },
    ),
    *twins(
        "video_remix",
        "video_remix",
        "sora-2",
        lambda h: {"video_id": SORA_VIDEO, "prompt": "a hat", "api_key": "sk-fake"},
    ),
    Case(
        "ocr",
        "ocr",
        "mistral/mistral-ocr-latest",
        # By position: LiteLLM's OCR takes *args and binds them itself.
        lambda h: litellm.ocr(
            "mistral/mistral-ocr-latest", OCR_DOCUMENT, api_base=f"{h.url()}/v1", api_key="fake"
        ),
    ),
    Case(
        "aocr",
        "ocr",
        "mistral/mistral-ocr-latest",
        lambda h: litellm.aocr(
            model="mistral/mistral-ocr-latest",
            document=OCR_DOCUMENT,
            api_base=f"{h.url()}/v1",
            api_key="fake",
        ),
        is_async=True,
    ),
    *twins(
        "decisions",
        "decisions",
        DECIDER,
        lambda h: {
            "model": DECIDER,
            "input": "hi",
            "questions": QUESTIONS,
            "api_base": f"{h.url()}/v1",
            "api_key": "k",
        },
        client=False,
    ),
    *twins(
        "systemone",
        "systemone",
        DECIDER,
        lambda h: {
            "model": DECIDER,
            "state": {"text": "hi"},
            "questions": SYSTEMONE_QUESTIONS,
            "api_base": f"{h.url()}/v1",
            "api_key": "k",
        },
        client=False,
    ),
    *twins(
        "extraction",
        "extraction",
        EXTRACTOR,
        lambda h: {
            "model": EXTRACTOR,
            "state": "I paid $12",
            "fields": FIELDS,
            "api_base": h.url(),
            "api_key": "k",
        },
        client=False,
    ),
    *twins(
        "search",
        "search",
        "perplexity/search",  # a search names no model: LiteLLM prices the provider's search
        lambda h: {
            "query": "news",
            "search_provider": "perplexity",
            "api_base": h.url(),
            "api_key": "fake",
        },
        client=False,
    ),
    *twins(
        "transcription",
        "transcription",
        "whisper-1",
        lambda h: {"model": "whisper-1", "file": _audio()},
    ),
    *twins(
        "speech",
        "speech",
        "tts-1",
        lambda h: {"model": "tts-1", "input": "hello", "voice": "alloy"},
    ),
    *twins(
        "rerank",
        "rerank",
        "cohere/rerank-english-v3.0",
        lambda h: {
            "model": "cohere/rerank-english-v3.0",
            "query": "which?",
            "documents": ["a", "b"],
            "api_key": "fake",
        },
    ),
    Case(
        "anthropic_messages",
        "chat",
        "anthropic/claude-haiku-4-5",
        lambda h: litellm.anthropic_messages(
            model="anthropic/claude-haiku-4-5",
            messages=MESSAGES,
            max_tokens=200,
            api_key="fake",
            client=h.async_http(),
        ),
        is_async=True,
    ),
]

# Paid, but LiteLLM answers 0.0 for them: their responses carry no duration to price.
PRICED_VIDEO = encode_video_id_with_provider("video_fake", "openai", "fake-video")
UNPRICED_CASES = [
    *twins(
        "video_edit",
        "video_edit",
        "fake-video",
        lambda h: {"video_id": PRICED_VIDEO, "prompt": "a hat", "api_key": "sk-fake"},
    ),
    *twins(
        "video_extension",
        "video_extension",
        "fake-video",
        lambda h: {"video_id": PRICED_VIDEO, "prompt": "on", "seconds": "4", "api_key": "sk-fake"},
    ),
]


async def run(case: Case, http: FakeHTTPProvider) -> Any:
    result = case.call(http)
    return await result if case.is_async else result


def litellm_cost(case: Case, response: Any) -> float:
    """LiteLLM's own figure for this very response."""
    if isinstance(response, dict):  # Anthropic-style messages answer with a plain dict
        return litellm.completion_cost(
            completion_response=response, model=case.model, call_type="anthropic_messages"
        )
    cost = response._hidden_params["response_cost"]
    assert isinstance(cost, float)
    return cost


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_each_call_type_makes_one_span_priced_as_litellm_prices_it(
    case: Case, telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    response = await run(case, http)

    span = telemetry.span()
    cost = litellm_cost(case, response)
    assert cost > 0
    assert span.name == f"{case.operation} {case.model}"
    assert span.kind is SpanKind.CLIENT
    assert span.attributes[sc.GEN_AI_OPERATION_NAME] == case.operation
    assert span.attributes[sc.GEN_AI_REQUEST_MODEL] == case.model
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_PRICED
    assert span.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(cost, rel=1e-9)
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(cost, rel=1e-9)
    [duration] = telemetry.points(sc.METRIC_OPERATION_DURATION)
    assert duration.count == 1
    assert duration.attributes[sc.GEN_AI_OPERATION_NAME] == case.operation
    assert len(http.requests) == 1


@pytest.mark.parametrize("case", UNPRICED_CASES, ids=str)
async def test_a_video_edit_or_extension_is_metered_as_unpriced_never_as_free(
    case: Case, telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    # A per-second price, which LiteLLM's own test of a map entry counts as one: by that test
    # alone, LiteLLM's 0.0 would read as a free call.
    litellm.register_model(
        {
            "fake-video": {
                "litellm_provider": "openai",
                "mode": "video_generation",
                "output_cost_per_second": 0.1,
            }
        }
    )
    response = await run(case, http)

    assert response._hidden_params["response_cost"] == 0.0
    span = telemetry.span()
    assert span.name == f"{case.operation} fake-video"
    assert span.attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
    assert sc.GEN_AI_USAGE_COST not in span.attributes
    assert telemetry.metric_sum(sc.METRIC_UNPRICED_CALLS) == 1
    assert telemetry.points(sc.METRIC_COST) == []
    assert len(http.requests) == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["video_remix", "avideo_remix"])
async def test_a_remix_of_a_video_whose_id_names_no_model_is_priced_as_the_model_that_made_it(
    is_async: bool, telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    options = {"video_id": "video_fake", "prompt": "a hat", "api_key": "sk-fake"}
    if is_async:
        response = await litellm.avideo_remix(**options, client=http.async_http())
    else:
        response = litellm.video_remix(**options, client=http.http())

    cost = response._hidden_params["response_cost"]
    assert cost > 0
    span = telemetry.span()
    assert span.name == "video_remix unknown"  # the request named none
    assert span.attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"  # LiteLLM's default for videos
    assert span.attributes[sc.GEN_AI_RESPONSE_MODEL] == "sora-2"
    assert span.attributes[sc.SPENDMETER_PRICING_MODEL] == "sora-2"
    assert span.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(cost, rel=1e-9)
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(cost, rel=1e-9)


ROUTED: dict[str, tuple[str, Callable[[litellm.Router], Any]]] = {
    "aimage_edit": (
        "openai/gpt-image-1",
        lambda r: r.aimage_edit(model="group", image=_png(), prompt="a hat"),
    ),
    "video_generation": (
        "openai/sora-2",
        lambda r: r.video_generation(model="group", prompt="a cat", seconds="4"),
    ),
    "avideo_generation": (
        "openai/sora-2",
        lambda r: r.avideo_generation(model="group", prompt="a cat", seconds="4"),
    ),
    "video_remix": (
        "openai/sora-2",
        lambda r: r.video_remix(model="group", video_id=SORA_VIDEO, prompt="a hat"),
    ),
    "avideo_remix": (
        "openai/sora-2",
        lambda r: r.avideo_remix(model="group", video_id=SORA_VIDEO, prompt="a hat"),
    ),
    "ocr": ("mistral/mistral-ocr-latest", lambda r: r.ocr(model="group", document=OCR_DOCUMENT)),
    "aocr": ("mistral/mistral-ocr-latest", lambda r: r.aocr(model="group", document=OCR_DOCUMENT)),
    "asearch": ("perplexity/search", lambda r: r.asearch(model="group", query="news")),
    "decisions": (DECIDER, lambda r: r.decisions(model="group", input="hi", questions=QUESTIONS)),
    "adecisions": (DECIDER, lambda r: r.adecisions(model="group", input="hi", questions=QUESTIONS)),
    "systemone": (
        DECIDER,
        lambda r: r.systemone(model="group", state={"text": "hi"}, questions=SYSTEMONE_QUESTIONS),
    ),
    "asystemone": (
        DECIDER,
        lambda r: r.asystemone(model="group", state={"text": "hi"}, questions=SYSTEMONE_QUESTIONS),
    ),
    "extraction": (EXTRACTOR, lambda r: r.extraction(model="group", state="$12", fields=FIELDS)),
    "aextraction": (EXTRACTOR, lambda r: r.aextraction(model="group", state="$12", fields=FIELDS)),
}


@pytest.mark.parametrize("endpoint", ROUTED)
async def test_a_router_request_is_one_span_over_its_priced_attempt(
    endpoint: str, telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    model, send = ROUTED[endpoint]
    # The Router passes no client on to these endpoints: the deployment names the server.
    deployment = {"model": model, "api_key": "fake", "api_base": f"{http.url()}/v1"}
    # A search tool is named like a model group.
    tool = {"search_provider": "perplexity", "api_key": "fake", "api_base": http.url()}
    router = litellm.Router(
        model_list=[{"model_name": "group", "litellm_params": deployment}],
        search_tools=[{"search_tool_name": "group", "litellm_params": tool}],
    )

    response = send(router)
    if asyncio.iscoroutine(response):
        response = await response

    cost = response._hidden_params["response_cost"]
    assert cost > 0
    spans = telemetry.spans()
    [request] = [s for s in spans if s.parent is None]
    [attempt] = [s for s in spans if s.parent is not None]
    assert request.attributes[sc.SPENDMETER_REQUEST_COST] == pytest.approx(cost, rel=1e-9)
    assert attempt.attributes[sc.SPENDMETER_ROUTER_MODEL_GROUP] == "group"
    assert attempt.attributes[sc.GEN_AI_REQUEST_MODEL] == model
    assert attempt.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(cost, rel=1e-9)
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(cost, rel=1e-9)
    assert len(http.requests) == 1


@pytest.mark.parametrize(
    ("endpoint", "options"),
    [("avideo_edit", {}), ("avideo_extension", {"seconds": "4"})],
    ids=["avideo_edit", "avideo_extension"],
)
async def test_a_router_request_for_a_video_edit_or_extension_is_one_unpriced_attempt(
    endpoint: str, options: dict[str, str], telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    deployment = {"model": "openai/sora-2", "api_key": "fake", "api_base": f"{http.url()}/v1"}
    router = litellm.Router(model_list=[{"model_name": "group", "litellm_params": deployment}])

    await getattr(router, endpoint)(model="group", video_id=SORA_VIDEO, prompt="on", **options)

    spans = telemetry.spans()
    [request] = [s for s in spans if s.parent is None]
    [attempt] = [s for s in spans if s.parent is not None]
    assert request.name == f"{attempt.attributes[sc.GEN_AI_OPERATION_NAME]} group"
    assert attempt.attributes[sc.GEN_AI_REQUEST_MODEL] == "openai/sora-2"
    assert attempt.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
    assert sc.SPENDMETER_REQUEST_COST not in request.attributes
    assert telemetry.metric_sum(sc.METRIC_UNPRICED_CALLS) == 1
    assert len(http.requests) == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["image_variation", "aimage_variation"])
async def test_an_image_variation_is_metered_as_unpriced_never_as_free(
    is_async: bool, telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    # LiteLLM prices no variation: with prices in its map, it still answers 0.0.
    litellm.register_model(
        {
            "fake-variations": {
                "litellm_provider": "openai",
                "mode": "image_generation",
                "input_cost_per_token": 1e-5,
                "output_cost_per_image": IMAGE_PRICE,
            }
        }
    )
    options = {"model": "openai/fake-variations", "api_base": f"{http.url()}/v1", "api_key": "k"}
    if is_async:
        response = await litellm.aimage_variation(image=_png(), **options)
    else:
        response = litellm.image_variation(image=_png(), **options)

    assert response._hidden_params["response_cost"] == 0.0
    span = telemetry.span()
    assert span.name == "image_variation openai/fake-variations"
    assert span.attributes[sc.SPENDMETER_PRICING_STATUS] == sc.PRICING_UNPRICED
    assert sc.GEN_AI_USAGE_COST not in span.attributes
    assert telemetry.metric_sum(sc.METRIC_UNPRICED_CALLS) == 1
    assert len(http.requests) == 1


async def test_an_exceeded_budget_refuses_an_image_variation_before_it_is_sent(
    telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    exceeded_budget(telemetry)

    with pytest.raises(BudgetExceededError):
        await litellm.aimage_variation(
            image=_png(), model="openai/dall-e-2", api_base=f"{http.url()}/v1", api_key="k"
        )

    assert http.requests == []


@pytest.mark.parametrize("is_async", [False, True], ids=["image_generation", "aimage_generation"])
async def test_images_are_priced_per_image(
    is_async: bool, telemetry: Telemetry, images: FakeImageProvider
) -> None:
    if is_async:
        response = await litellm.aimage_generation(model=IMAGE_MODEL, prompt="a cat", n=1)
    else:
        response = litellm.image_generation(model=IMAGE_MODEL, prompt="a cat", n=1)

    span = telemetry.span()
    assert span.name == f"image_generation {IMAGE_MODEL}"
    assert response._hidden_params["response_cost"] == pytest.approx(IMAGE_PRICE)
    assert span.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(IMAGE_PRICE)
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(IMAGE_PRICE)
    assert images.requests == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_an_anthropic_style_messages_call_is_priced(
    is_async: bool, telemetry: Telemetry
) -> None:
    model = "anthropic/claude-haiku-4-5"
    if is_async:
        response = await litellm.anthropic_messages(
            model=model, messages=MESSAGES, max_tokens=50, mock_response="hello"
        )
    else:
        response = litellm.anthropic_messages_handler(
            model=model, messages=MESSAGES, max_tokens=50, mock_response="hello"
        )

    span = telemetry.span()
    expected = litellm.completion_cost(
        completion_response=response, model=model, call_type="anthropic_messages"
    )
    assert span.name == f"chat {model}"
    assert span.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(expected, rel=1e-9)
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == response["usage"]["input_tokens"]


async def test_a_streamed_responses_call_is_priced_from_its_final_event(
    telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    stream = litellm.responses(
        model="openai/gpt-4o-mini", input="hi", api_key="sk-fake", client=http.http(), stream=True
    )
    events = list(stream)
    list(stream)  # exhausted again: still one span

    final = events[-1].response
    span = telemetry.span()
    assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == final.usage.input_tokens
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == final.usage.output_tokens
    assert span.attributes[sc.GEN_AI_USAGE_COST] == pytest.approx(
        final._hidden_params["response_cost"], rel=1e-9
    )
    assert span.attributes[sc.GEN_AI_RESPONSE_ID] == final.id


async def test_an_async_streamed_responses_call_broken_out_of_ends_its_span_once(
    telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    stream = await litellm.aresponses(
        model="openai/gpt-4o-mini",
        input="hi",
        api_key="sk-fake",
        client=http.async_http(),
        stream=True,
    )
    async for _event in stream:
        break
    await stream.aclose()

    span = telemetry.span()
    assert span.status.status_code is not StatusCode.ERROR
    assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is True


@pytest.mark.parametrize("case", CASES + UNPRICED_CASES, ids=str)
async def test_an_exceeded_budget_refuses_each_call_type_before_it_is_sent(
    case: Case, telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    exceeded_budget(telemetry)

    with pytest.raises(BudgetExceededError) as refused:
        await run(case, http)

    assert refused.value.response is None
    assert http.requests == []
    span = telemetry.span()
    assert span.attributes[sc.ERROR_TYPE] == "BudgetExceededError"
    assert span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("is_async", [False, True], ids=["image_generation", "aimage_generation"])
async def test_an_exceeded_budget_refuses_images_before_they_are_painted(
    is_async: bool, telemetry: Telemetry, images: FakeImageProvider
) -> None:
    exceeded_budget(telemetry)
    generate: Callable[..., Any] = (
        litellm.aimage_generation if is_async else litellm.image_generation
    )

    with pytest.raises(BudgetExceededError):
        result = generate(model=IMAGE_MODEL, prompt="a cat")
        if isinstance(result, Awaitable):
            await result

    assert images.requests == 0


def test_an_anthropic_style_sync_messages_call_is_refused_past_the_budget(
    telemetry: Telemetry,
) -> None:
    exceeded_budget(telemetry)

    with pytest.raises(BudgetExceededError) as refused:
        litellm.anthropic_messages_handler(
            model="anthropic/claude-haiku-4-5", messages=MESSAGES, max_tokens=5, mock_response="x"
        )

    assert refused.value.response is None
    assert telemetry.span().attributes[sc.ERROR_TYPE] == "BudgetExceededError"


def test_uninstrument_restores_every_wrapped_name(instrument: Any) -> None:
    import litellm.chat_completions.dispatch as dispatch
    import litellm.main as main

    originals = (main.completion, dispatch._PYTHON_COMPLETION, litellm.Router.acompletion)
    instrument()
    assert main.completion is not originals[0]
    assert dispatch._PYTHON_COMPLETION is main.completion  # one wrapper for both names

    from spendmeter import LiteLLMInstrumentor

    LiteLLMInstrumentor().uninstrument()

    assert (main.completion, dispatch._PYTHON_COMPLETION) == originals[:2]
    assert not hasattr(litellm.Router.acompletion, "__wrapped__")


def reserving_budget(telemetry: Telemetry, budget: float) -> BudgetSpanProcessor:
    processor = BudgetSpanProcessor(budget, raise_on_budget=True, reserve=True, thresholds=(1.0,))
    telemetry.tracer_provider.add_span_processor(processor)
    return processor


async def test_a_reserving_budget_holds_each_image_before_it_is_painted(
    telemetry: Telemetry, images: FakeImageProvider
) -> None:
    budget = reserving_budget(telemetry, 1.5 * IMAGE_PRICE)

    with pytest.raises(BudgetExceededError, match="refused"):
        await litellm.aimage_generation(model=IMAGE_MODEL, prompt="two cats", n=2)
    assert images.requests == 0

    await litellm.aimage_generation(model=IMAGE_MODEL, prompt="one cat", n=1)
    assert images.requests == 1
    assert budget.total_cost == pytest.approx(IMAGE_PRICE)
    assert budget.reserved == 0


def test_a_reserving_budget_holds_a_reranks_search_unit(
    telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    one_query = litellm.rerank(
        model="cohere/rerank-english-v3.0",
        query="which?",
        documents=["a"],
        api_key="fake",
        client=http.http(),
    )._hidden_params["response_cost"]
    reserving_budget(telemetry, one_query / 2)

    with pytest.raises(BudgetExceededError, match="refused"):
        litellm.rerank(
            model="cohere/rerank-english-v3.0",
            query="which?",
            documents=["a", "b"],
            api_key="fake",
            client=http.http(),
        )

    assert len(http.requests) == 1  # the first, unbudgeted rerank only


def test_a_streamed_responses_call_abandoned_half_way_ends_its_span_once(
    telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    stream = litellm.responses(
        model="openai/gpt-4o-mini", input="hi", api_key="sk-fake", client=http.http(), stream=True
    )
    next(stream)
    del stream
    gc.collect()

    span = telemetry.span()
    assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    assert span.status.status_code is not StatusCode.ERROR


async def test_a_streamed_responses_call_cancelled_mid_stream_ends_its_span_once(
    telemetry: Telemetry, http: FakeHTTPProvider
) -> None:
    stream = await litellm.aresponses(
        model="openai/gpt-4o-mini",
        input="hi",
        api_key="sk-fake",
        client=http.async_http(),
        stream=True,
    )

    async def read_slowly() -> None:
        async for _event in stream:
            await asyncio.sleep(10)

    reader = asyncio.create_task(read_slowly())
    await asyncio.sleep(0.05)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await stream.aclose()

    assert len(telemetry.spans()) == 1
