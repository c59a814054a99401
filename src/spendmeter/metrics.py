"""The instruments spendmeter records on every LLM call (DESIGN.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Meter

from spendmeter import semconv as sc


@dataclass(frozen=True, slots=True)
class Instruments:
    cost: Counter
    token_usage: Histogram
    duration: Histogram
    time_to_first_chunk: Histogram
    unpriced_calls: Counter


def create_instruments(meter: Meter) -> Instruments:
    return Instruments(
        cost=meter.create_counter(
            sc.METRIC_COST, unit="USD", description="Cost of GenAI calls in US dollars"
        ),
        token_usage=meter.create_histogram(
            sc.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=sc.TOKEN_USAGE_BUCKETS,
        ),
        duration=meter.create_histogram(
            sc.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        ),
        time_to_first_chunk=meter.create_histogram(
            sc.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time from the request until the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        ),
        unpriced_calls=meter.create_counter(
            sc.METRIC_UNPRICED_CALLS,
            unit="{call}",
            description="Calls whose cost is unknown because no price exists for the model",
        ),
    )
