"""docker-compose.yaml and the files it mounts, checked without a container engine: every
mounted file exists, every host and port one file names is one another file serves, and the
dashboard picks its datasources through variables. (The PromQL itself runs against a real
Prometheus in test_ops_prometheus.py.)"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests._support import ROOT

# Real servers or subprocesses: the `integration` set (`make check` leaves it out).
pytestmark = pytest.mark.integration

PROVISIONING = ROOT / "dashboards" / "provisioning"


def load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yaml")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((ROOT / "dashboards" / "spendmeter.json").read_text())


def mounts(service: dict[str, Any]) -> dict[PurePosixPath, str]:
    """``{path in the container: host path or named volume}``."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[PurePosixPath(target)] = source
    return found


def mounted_file(service: dict[str, Any], container_path: str | PurePosixPath) -> Path:
    """The repository file behind a path in the container; fails when nothing is mounted there."""
    path = PurePosixPath(container_path)
    for target, source in mounts(service).items():
        if path == target or target in path.parents:
            return ROOT / source / path.relative_to(target)
    pytest.fail(f"nothing is mounted at {path}")


def published(service: dict[str, Any]) -> dict[int, int]:
    """``{container port: host port}``."""
    ports = {}
    for mapping in service.get("ports", []):
        host, container = str(mapping).split(":")
        ports[int(container)] = int(host)
    return ports


def flag(service: dict[str, Any], name: str) -> str:
    (value,) = (arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(f"{name}="))
    return value


def test_the_stack_has_its_four_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"collector", "jaeger", "prometheus", "grafana"}
    for name, service in compose["services"].items():
        image, _, tag = service["image"].partition(":")
        assert tag and tag != "latest", f"{name} image {image} is not pinned"


def test_every_bind_mount_exists_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for source in mounts(service).values():
            if source.startswith("."):
                assert (ROOT / source).exists(), source
            else:
                assert source in compose["volumes"], source


def test_collector_runs_the_repository_config(compose: dict[str, Any]) -> None:
    collector = compose["services"]["collector"]
    config = mounted_file(collector, flag(collector, "--config"))
    assert config == ROOT / "collector-config.yaml"
    receivers = yaml.safe_load(config.read_text())["receivers"]["otlp"]["protocols"]
    for protocol in receivers.values():
        port = int(protocol["endpoint"].rsplit(":", 1)[1])
        assert published(collector)[port] == port  # apps on the host send to localhost:4317/4318


def test_collector_exports_to_services_of_the_stack(compose: dict[str, Any]) -> None:
    exporters = load("collector-config.yaml")["exporters"]
    jaeger_host, jaeger_port = exporters["otlp_grpc/jaeger"]["endpoint"].split(":")
    assert jaeger_host in compose["services"]
    assert jaeger_port == "4317"  # Jaeger v2's own OTLP gRPC receiver
    assert "JAEGER_LISTEN_HOST=0.0.0.0" in compose["services"]["jaeger"]["environment"]


def test_prometheus_scrapes_the_collector_and_loads_the_alerts(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config_path = PurePosixPath(flag(prometheus, "--config.file"))
    assert mounted_file(prometheus, config_path) == ROOT / "prometheus.yml"
    config = load("prometheus.yml")
    for rule_file in config["rule_files"]:
        # Relative paths resolve from the config file's folder, in the container as here.
        assert mounted_file(prometheus, config_path.parent / rule_file) == ROOT / rule_file
    exporter_port = load("collector-config.yaml")["exporters"]["prometheus"]["endpoint"]
    targets = [
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    ]
    assert targets == [f"collector:{exporter_port.rsplit(':', 1)[1]}"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]


def test_grafana_datasources_point_at_the_stack(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    datasources = yaml.safe_load(
        mounted_file(grafana, "/etc/grafana/provisioning/datasources/datasources.yaml").read_text()
    )["datasources"]
    by_type = {source["type"]: source for source in datasources}
    assert set(by_type) == {"prometheus", "jaeger"}
    for kind, port in (("prometheus", 9090), ("jaeger", 16686)):
        url = urlsplit(by_type[kind]["url"])
        assert url.hostname == kind and url.hostname in compose["services"]
        assert url.port == port and port in published(compose["services"][kind])
    links = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert [link["datasourceUid"] for link in links] == [by_type["jaeger"]["uid"]]


def test_grafana_loads_the_dashboard_into_a_folder(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    provider_file = mounted_file(grafana, "/etc/grafana/provisioning/dashboards/spendmeter.yaml")
    assert provider_file == PROVISIONING / "dashboards" / "spendmeter.yaml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert provider["folder"]
    dashboard_file = mounted_file(grafana, f"{provider['options']['path']}/spendmeter.json")
    assert dashboard_file == ROOT / "dashboards" / "spendmeter.json"


def test_dashboard_uses_datasource_variables_not_uids(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["jaeger"]["type"] == "datasource"
    assert variables["jaeger"]["query"] == "jaeger"
    uids = {"prometheus": "${datasource}", "jaeger": "${jaeger}"}
    for panel in dashboard["panels"]:
        for ref in (panel["datasource"], *(t["datasource"] for t in panel["targets"])):
            assert ref["uid"] == uids[ref["type"]], panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"


def test_dashboard_is_current_schema_with_unique_non_overlapping_panels(
    dashboard: dict[str, Any],
) -> None:
    assert dashboard["schemaVersion"] == 42  # Grafana 12.3, the image docker-compose.yaml pins
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_dashboard_lists_priced_traces_from_jaeger(dashboard: dict[str, Any]) -> None:
    (panel,) = (p for p in dashboard["panels"] if p["datasource"]["type"] == "jaeger")
    (target,) = panel["targets"]
    assert target["queryType"] == "search"
    assert target["service"] == "$service"
    assert target["tags"] == "spendmeter.pricing.status=priced"
    (link,) = dashboard["links"]
    assert urlsplit(link["url"]).port == 16686


def test_expensive_calls_panel_asks_for_exemplars(dashboard: dict[str, Any]) -> None:
    (panel,) = (p for p in dashboard["panels"] if p["title"] == "Expensive calls")
    assert [target["exemplar"] for target in panel["targets"]] == [True]
