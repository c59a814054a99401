"""collector-config.yaml: pipelines wired to components that exist, in a safe order, on the
ports and with the options the rest of the stack relies on. No collector binary runs here, so
this checks the file's structure; docker-compose.yaml pins the collector it was written for."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests._support import ROOT

# Real servers or subprocesses: the `integration` set (`make check` leaves it out).
pytestmark = pytest.mark.integration

KINDS = ("receivers", "processors", "exporters")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "collector-config.yaml").read_text())


def pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    return config["service"]["pipelines"]


def component_type(component_id: str) -> str:
    """``otlp_grpc/jaeger`` is an ``otlp_grpc`` exporter named ``jaeger``."""
    return component_id.split("/", 1)[0]


def exporters_of_type(config: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: c for name, c in config["exporters"].items() if component_type(name) == kind}


def test_there_is_a_traces_and_a_metrics_pipeline(config: dict[str, Any]) -> None:
    assert set(pipelines(config)) == {"traces", "metrics"}


def test_pipelines_name_only_defined_components(config: dict[str, Any]) -> None:
    for name, pipeline in pipelines(config).items():
        for kind in KINDS:
            assert pipeline[kind], f"pipeline {name} has no {kind}"
            undefined = set(pipeline[kind]) - set(config[kind])
            assert not undefined, f"pipeline {name} names undefined {kind}: {undefined}"


def test_every_defined_component_is_used(config: dict[str, Any]) -> None:
    for kind in KINDS:
        used = {component for p in pipelines(config).values() for component in p[kind]}
        assert set(config[kind]) == used, f"{kind} defined but in no pipeline"


def test_memory_limiter_comes_first_and_batch_last(config: dict[str, Any]) -> None:
    for name, pipeline in pipelines(config).items():
        processors = [component_type(p) for p in pipeline["processors"]]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name


def test_memory_limiter_is_set(config: dict[str, Any]) -> None:
    # Both default to 0, which leaves the processor doing nothing.
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"]
    assert 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"] <= 100


def test_delta_metrics_become_cumulative_before_prometheus(config: dict[str, Any]) -> None:
    processors = [component_type(p) for p in pipelines(config)["metrics"]["processors"]]
    assert "deltatocumulative" in processors


def test_otlp_is_received_on_all_interfaces_on_the_standard_ports(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    for pipeline in pipelines(config).values():
        assert pipeline["receivers"] == ["otlp"]


def test_traces_go_to_jaeger_over_otlp(config: dict[str, Any]) -> None:
    (name,) = pipelines(config)["traces"]["exporters"]
    assert component_type(name) == "otlp_grpc"  # `otlp` is the deprecated alias
    exporter = config["exporters"][name]
    assert exporter["endpoint"] == "jaeger:4317"
    assert exporter["tls"]["insecure"] is True


def test_metrics_are_exposed_to_prometheus_with_resource_labels(config: dict[str, Any]) -> None:
    (name,) = pipelines(config)["metrics"]["exporters"]
    assert component_type(name) == "prometheus"
    exporter = config["exporters"][name]
    assert exporter["endpoint"] == "0.0.0.0:8889"
    assert exporter["resource_to_telemetry_conversion"]["enabled"] is True
    # Suffixes on (the default), so names read gen_ai_client_cost_USD_total as in DESIGN.md.
    assert "add_metric_suffixes" not in exporter
    assert "translation_strategy" not in exporter
    assert exporters_of_type(config, "prometheus") == {name: exporter}
