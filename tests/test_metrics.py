"""Metrics recorded on every call: they agree with the spans, to the cent, and stay bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import litellm
import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from spendmeter import semconv as sc
from tests._support import MESSAGES, Telemetry

ANSWER = "Every token is billed."


def calls_of_every_kind() -> None:
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER)
    litellm.completion(model="anthropic/claude-haiku-4-5", messages=MESSAGES, mock_response=ANSWER)
    for _ in litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response=ANSWER,
        stream=True,
        stream_options={"include_usage": True},
    ):
        pass
    litellm.embedding(model="text-embedding-3-small", input=["a"], mock_response=[0.1])

    async def async_calls() -> None:
        await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER)
        stream = await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, stream=True
        )
        async for _ in stream:
            pass

    asyncio.run(async_calls())


def test_cost_counter_equals_sum_of_span_costs(telemetry: Telemetry) -> None:
    calls_of_every_kind()

    spans = telemetry.spans()
    assert len(spans) == 6
    span_total = sum(span.attributes[sc.GEN_AI_USAGE_COST] for span in spans)
    assert telemetry.metric_sum(sc.METRIC_COST) == pytest.approx(span_total, rel=1e-12)

    by_model: dict[str, float] = {}
    for span in spans:
        model = span.attributes[sc.GEN_AI_REQUEST_MODEL]
        by_model[model] = by_model.get(model, 0.0) + span.attributes[sc.GEN_AI_USAGE_COST]
    for point in telemetry.points(sc.METRIC_COST):
        assert set(point.attributes) == {
            sc.GEN_AI_REQUEST_MODEL,
            sc.GEN_AI_PROVIDER_NAME,
            sc.GEN_AI_OPERATION_NAME,
        }
    counted = {}
    for point in telemetry.points(sc.METRIC_COST):
        model = point.attributes[sc.GEN_AI_REQUEST_MODEL]
        counted[model] = counted.get(model, 0.0) + point.value
    assert counted == pytest.approx(by_model, rel=1e-12)


def test_token_and_duration_histograms(telemetry: Telemetry) -> None:
    calls_of_every_kind()
    spans = telemetry.spans()

    token_points = telemetry.points(sc.METRIC_TOKEN_USAGE)
    inputs = sum(p.sum for p in token_points if p.attributes[sc.GEN_AI_TOKEN_TYPE] == "input")
    outputs = sum(p.sum for p in token_points if p.attributes[sc.GEN_AI_TOKEN_TYPE] == "output")
    assert inputs == sum(s.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] for s in spans)
    assert outputs == sum(s.attributes.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, 0) for s in spans)
    # Embeddings have no output tokens in semconv: no attribute, no point (DESIGN.md section 3).
    for span in spans:
        if span.attributes[sc.GEN_AI_OPERATION_NAME] == sc.OPERATION_EMBEDDINGS:
            assert sc.GEN_AI_USAGE_OUTPUT_TOKENS not in span.attributes
    assert not [
        p
        for p in token_points
        if p.attributes[sc.GEN_AI_OPERATION_NAME] == sc.OPERATION_EMBEDDINGS
        and p.attributes[sc.GEN_AI_TOKEN_TYPE] == "output"
    ]
    assert tuple(token_points[0].explicit_bounds) == sc.TOKEN_USAGE_BUCKETS

    duration_points = telemetry.points(sc.METRIC_OPERATION_DURATION)
    assert sum(p.count for p in duration_points) == len(spans)
    assert tuple(duration_points[0].explicit_bounds) == sc.DURATION_BUCKETS

    first_chunk = telemetry.points(sc.METRIC_TIME_TO_FIRST_CHUNK)
    assert sum(p.count for p in first_chunk) == 2  # the two streams, nothing else


def test_failed_call_records_duration_with_error_type(telemetry: Telemetry) -> None:
    error = litellm.AuthenticationError("bad key", llm_provider="openai", model="gpt-4o-mini")
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response=error)

    (point,) = telemetry.points(sc.METRIC_OPERATION_DURATION)
    assert point.attributes[sc.ERROR_TYPE] == "AuthenticationError"
    assert point.count == 1
    assert telemetry.points(sc.METRIC_COST) == []


@pytest.fixture
def sampled_out(make_telemetry: Any, instrument: Any) -> Telemetry:
    telemetry: Telemetry = instrument(make_telemetry(sampler=ALWAYS_OFF))
    return telemetry


def test_metrics_recorded_when_trace_is_sampled_out(sampled_out: Telemetry) -> None:
    responses = [
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER)
        for _ in range(3)
    ]
    expected = sum(litellm.completion_cost(completion_response=r) for r in responses)

    points = sampled_out.points(sc.METRIC_COST)
    assert sum(p.value for p in points) == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow
def test_series_stay_bounded_over_distinct_prompts_users_and_ids(telemetry: Telemetry) -> None:
    models = ("gpt-4o-mini", "gpt-4o", "anthropic/claude-haiku-4-5")
    for index in range(1000):
        litellm.completion(
            model=models[index % len(models)],
            messages=[{"role": "user", "content": f"question number {index}"}],
            mock_response=f"answer {index}",
            user=f"user-{index}",
        )

    assert len(telemetry.points(sc.METRIC_COST)) == len(models)
    assert len(telemetry.points(sc.METRIC_OPERATION_DURATION)) == len(models)
    assert len(telemetry.points(sc.METRIC_TOKEN_USAGE)) == len(models) * 2
    for point in telemetry.points(sc.METRIC_TOKEN_USAGE):
        assert set(point.attributes) == {
            sc.GEN_AI_REQUEST_MODEL,
            sc.GEN_AI_PROVIDER_NAME,
            sc.GEN_AI_OPERATION_NAME,
            sc.GEN_AI_TOKEN_TYPE,
        }


def test_cost_points_carry_exemplars_linking_to_the_trace(telemetry: Telemetry) -> None:
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER)

    span = telemetry.span()
    (point,) = telemetry.points(sc.METRIC_COST)
    assert [exemplar.trace_id for exemplar in point.exemplars] == [span.context.trace_id]
    assert point.exemplars[0].value == span.attributes[sc.GEN_AI_USAGE_COST]


def test_every_point_links_its_exemplar_to_the_llm_span_not_the_apps(
    telemetry: Telemetry,
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handle request"):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER)
        for _ in litellm.completion(
            model="gpt-4o", messages=MESSAGES, mock_response=ANSWER, stream=True
        ):
            pass

    llm_spans = {
        s.attributes[sc.GEN_AI_REQUEST_MODEL]: s
        for s in telemetry.spans()
        if s.kind.name == "CLIENT"
    }
    assert set(llm_spans) == {"gpt-4o-mini", "gpt-4o"}
    names = {
        sc.METRIC_COST,
        sc.METRIC_OPERATION_DURATION,
        sc.METRIC_TOKEN_USAGE,
        sc.METRIC_TIME_TO_FIRST_CHUNK,
    }
    # One collection: a cumulative point's exemplars are handed out once.
    data = telemetry.reader.get_metrics_data()
    linked = 0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in (m for m in scope.metrics if m.name in names):
                for point in metric.data.data_points:
                    span = llm_spans[point.attributes[sc.GEN_AI_REQUEST_MODEL]]
                    exemplars = [e.span_id for e in point.exemplars]
                    assert exemplars == [span.context.span_id], metric.name
                    linked += 1
    # cost 2, duration 2, tokens 2 x 2, time to first chunk 1 (the stream's)
    assert linked == 9
