"""The dashboards and alert rules, run against a real Prometheus scraping the demo app.

Prometheus (Debian's package: scripts/install-server.sh) runs on loopback and scrapes the
demo app's OpenTelemetry Prometheus exporter every second. The app runs the demo twice, with
a scrape in between, so rates move. Every PromQL query of every dashboard panel and every alert
rule then runs against that Prometheus, and its numbers are held against the app's own spans:
what Prometheus says was spent, called and counted is what the app spent, called and counted.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from spendmeter import semconv as sc
from tests._support import ROOT, free_port

# Real servers or subprocesses: the `integration` set (`make check` leaves it out).
pytestmark = pytest.mark.integration

DASHBOARD = json.loads((ROOT / "dashboards" / "spendmeter.json").read_text())
ALERTS = ROOT / "dashboards" / "alerts.yaml"
RULES = {
    rule["alert"]: rule["expr"]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]
    for rule in group["rules"]
}
APP = Path(__file__).with_name("ops_app.py")
REPORT_PREFIX = "ops_app "
OTHER_SCOPE = "another.genai.instrumentation"  # tests/ops_app.py records as it
SERVICE_NAME = "spendmeter-ops-test"
BUDGET_USD = 0.00001  # far below what the demo spends: the budget ends exhausted
WAIT_S = 30.0
# What Grafana would put in place of its variables. The whole test runs inside the last
# minute, so an hour's range holds everything and a minute's rate spans both demo rounds.
GRAFANA_VALUES = {
    "__rate_interval": "1m",
    "__range": "1h",
    "model": ".*",
    "datasource": "prometheus",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install it with make prometheus (CI does)")
    return path


def render(text: str) -> str:
    """Substitute Grafana's variables (``$name`` and ``${name}``) as Grafana would."""
    for name, value in GRAFANA_VALUES.items():
        text = text.replace("${" + name + "}", value)
        text = re.sub(r"\$" + name + r"\b", value, text)
    assert "$" not in text, f"a Grafana variable is left unsubstituted in {text!r}"
    return text


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {WAIT_S:.0f}s waiting for {what}")
        time.sleep(0.2)
    return value


# --- promtool ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "dashboards/alerts.yaml"),
        ("test", "rules", "dashboards/alerts_test.yaml"),
    ],
    ids=" ".join,
)
def test_promtool(args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [tool("promtool"), *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the running stack ---------------------------------------------------------------------


class Prometheus:
    def __init__(self, workdir: Path, scrape_target: str) -> None:
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": SERVICE_NAME, "static_configs": [{"targets": [scrape_target]}]}
            ],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{address}"
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={address}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self.ready, "Prometheus to start")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"Prometheus exited:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str | float) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            pytest.fail(f"Prometheus refused {params}: {error.read().decode()}")
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, time=time.time() if at is None else at)
        assert data["resultType"] == "vector", data
        return data["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class DemoApp:
    """tests/ops_app.py under opentelemetry-instrument, serving its metrics on loopback."""

    def __init__(self, workdir: Path) -> None:
        instrument = Path(sys.executable).with_name("opentelemetry-instrument")
        if not instrument.exists():
            pytest.fail(f"{instrument} is missing: install the package with its test extra")
        self.address = f"127.0.0.1:{free_port()}"
        host, port = self.address.split(":")
        env = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OTEL_SERVICE_NAME": SERVICE_NAME,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_PROMETHEUS_HOST": host,
            "OTEL_EXPORTER_PROMETHEUS_PORT": port,
            "SPENDMETER_BUDGET_USD": str(BUDGET_USD),
        }
        self.log = workdir / "app.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [str(instrument), sys.executable, str(APP)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=ROOT,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(line)
        self.lines.put(None)

    def report(self) -> list[dict[str, Any]]:
        """The calls the app's spans record, once the current round is done."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the demo app did not finish a round in {WAIT_S:.0f}s")
            if line is None:
                pytest.fail(f"the demo app exited:\n{self.log.read_text()}")
            if line.startswith(REPORT_PREFIX):
                return json.loads(line[len(REPORT_PREFIX) :])["calls"]

    def next_round(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class Spent:
    """The app's own account of its calls, from its spans: what Prometheus must agree with."""

    calls: list[dict[str, Any]]

    def total_cost(self) -> float:
        return sum(call["cost"] for call in self.calls if call["cost"] is not None)

    def cost_by_model(self) -> dict[str, float]:
        costs: dict[str, float] = defaultdict(float)
        for call in self.calls:
            if call["cost"] is not None:
                costs[call["model"]] += call["cost"]
        return dict(costs)

    def models(self) -> set[str]:
        return {call["model"] for call in self.calls}

    def calls_by_model(self, *, failed: bool | None = None) -> Counter[str]:
        return Counter(
            call["model"]
            for call in self.calls
            if failed is None or failed == (call["error"] is not None)
        )

    def errors(self) -> Counter[tuple[str, str]]:
        return Counter((c["model"], c["error"]) for c in self.calls if c["error"] is not None)

    def unpriced(self) -> Counter[tuple[str, str]]:
        return Counter(
            (call["model"], call["provider"])
            for call in self.calls
            if call["pricing"] == "unpriced"
        )

    def tokens(self) -> dict[tuple[str, str], float]:
        tokens: dict[tuple[str, str], float] = defaultdict(float)
        for call in self.calls:
            for kind in ("input", "output"):
                if call[f"{kind}_tokens"] is not None:
                    tokens[call["model"], kind] += call[f"{kind}_tokens"]
        return dict(tokens)


@dataclass(frozen=True)
class Run:
    prometheus: Prometheus
    spent: Spent
    at: float  # when every query is evaluated: after the last scrape of the final numbers

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.prometheus.query(render(expr), self.at)


def scraped_after(prometheus: Prometheus, moment: float) -> bool:
    """Whether Prometheus holds a scrape of the app that started after ``moment``."""
    latest = prometheus.query(f'timestamp(up{{job="{SERVICE_NAME}"}})')
    return bool(latest) and float(latest[0]["value"][1]) > moment


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("ops")
    app = DemoApp(workdir)
    prometheus = Prometheus(workdir, app.address)
    try:
        app.report()
        round_one_done = time.time()
        wait_for(lambda: scraped_after(prometheus, round_one_done), "a scrape of the first round")
        app.next_round()
        calls = app.report()
        done = time.time()
        wait_for(lambda: scraped_after(prometheus, done), "a scrape of the second round")
        yield Run(prometheus, Spent(calls), at=time.time())
    finally:
        app.stop()
        prometheus.stop()


# --- what each panel and rule must show ----------------------------------------------------


def values(result: list[dict[str, Any]], *labels: str) -> dict[Any, float]:
    """``{label value (or tuple of them): sample value}`` of an instant query's result."""
    keyed: dict[Any, float] = {}
    for sample in result:
        key = tuple(sample["metric"].get(label, "") for label in labels)
        assert key not in keyed, f"two series for {key}: {result}"
        keyed[key[0] if len(key) == 1 else key] = float(sample["value"][1])
    return keyed


def single(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def approx(expected: Any) -> Any:
    return pytest.approx(expected, rel=1e-9)


def positive(keyed: dict[Any, float]) -> bool:
    return all(value > 0 and math.isfinite(value) for value in keyed.values())


def check_total_spend(spent: Spent, results: list[Any]) -> None:
    assert single(results[0]) == approx(spent.total_cost())
    assert spent.total_cost() > 0


def check_calls(spent: Spent, results: list[Any]) -> None:
    assert single(results[0]) == len(spent.calls)


def check_errors(spent: Spent, results: list[Any]) -> None:
    failed = sum(spent.errors().values())
    if failed:
        assert single(results[0]) == failed
    else:
        assert results[0] == []  # no failed-call series at all: the panel shows its "0"


def check_unpriced(spent: Spent, results: list[Any]) -> None:
    assert spent.unpriced(), "the demo makes an unpriced call"
    assert single(results[0]) == sum(spent.unpriced().values())


def check_budget_used(spent: Spent, results: list[Any]) -> None:
    assert single(results[0]) == approx(spent.total_cost() / BUDGET_USD)


def check_spend_rate(spent: Spent, results: list[Any]) -> None:
    rates = values(results[0], "gen_ai_request_model")
    assert set(rates) == set(spent.cost_by_model())
    assert positive(rates), rates


def check_spend_by_model(spent: Spent, results: list[Any]) -> None:
    assert values(results[0], "gen_ai_request_model") == approx(spent.cost_by_model())


def check_cost_per_request(spent: Spent, results: list[Any]) -> None:
    succeeded = spent.calls_by_model(failed=False)
    expected = {model: cost / succeeded[model] for model, cost in spent.cost_by_model().items()}
    assert values(results[0], "gen_ai_request_model") == approx(expected)


def check_tokens(spent: Spent, results: list[Any]) -> None:
    tokens = values(results[0], "gen_ai_request_model", "gen_ai_token_type")
    assert tokens == spent.tokens()


def check_calls_and_errors(spent: Spent, results: list[Any]) -> None:
    calls = values(results[0], "gen_ai_request_model")
    assert set(calls) == spent.models()
    assert positive(calls), calls
    errors = values(results[1], "gen_ai_request_model", "error_type")
    assert set(errors) == set(spent.errors())


def check_p95_duration(spent: Spent, results: list[Any]) -> None:
    p95 = values(results[0], "gen_ai_request_model")
    assert set(p95) == spent.models()
    assert positive(p95), p95


def check_budget_spent_vs_limit(spent: Spent, results: list[Any]) -> None:
    assert single(results[0]) == approx(spent.total_cost())
    assert single(results[1]) == approx(BUDGET_USD)


def check_unpriced_by_model(spent: Spent, results: list[Any]) -> None:
    unpriced = values(results[0], "gen_ai_request_model", "gen_ai_provider_name")
    assert unpriced == dict(spent.unpriced())


def check_expensive_calls(spent: Spent, results: list[Any]) -> None:
    increases = values(results[0], "gen_ai_request_model")
    assert set(increases) == set(spent.cost_by_model())
    assert positive(increases), increases


PANEL_CHECKS: dict[str, Callable[[Spent, list[Any]], None]] = {
    "Total spend": check_total_spend,
    "Calls": check_calls,
    "Errors": check_errors,
    "Unpriced calls": check_unpriced,
    "Budget used": check_budget_used,
    "Spend rate by model": check_spend_rate,
    "Spend by model": check_spend_by_model,
    "Cost per request by model": check_cost_per_request,
    "Tokens by model and type": check_tokens,
    "Calls and errors per minute": check_calls_and_errors,
    "p95 duration by model": check_p95_duration,
    "Budget spent vs. limit": check_budget_spent_vs_limit,
    "Unpriced calls by model": check_unpriced_by_model,
    "Expensive calls": check_expensive_calls,
}
PROMETHEUS_PANELS = {
    panel["title"]: panel
    for panel in DASHBOARD["panels"]
    if panel["datasource"]["type"] == "prometheus"
}


def test_every_prometheus_panel_is_checked() -> None:
    assert set(PROMETHEUS_PANELS) == set(PANEL_CHECKS)


@pytest.mark.parametrize("title", sorted(PROMETHEUS_PANELS))
def test_dashboard_panel_shows_what_the_app_spent(run: Run, title: str) -> None:
    panel = PROMETHEUS_PANELS[title]
    assert render(panel["datasource"]["uid"]) == "prometheus"
    results = [run.query(target["expr"]) for target in panel["targets"]]
    PANEL_CHECKS[title](run.spent, results)


def label_values(run: Run, variable: str) -> set[str]:
    """The options Grafana would offer for a ``label_values([metric, ]label)`` variable."""
    (query,) = (
        v["query"]["query"] for v in DASHBOARD["templating"]["list"] if v["name"] == variable
    )
    match = re.fullmatch(r"label_values\((?:(\w+(?:\{[^}]*\})?), )?(\w+)\)", query)
    assert match, query
    metric, label = match.groups()
    params = {"match[]": metric} if metric else {}
    return set(run.prometheus.api(f"label/{label}/values", **params))


def test_another_instrumentations_series_are_there_to_be_left_out(run: Run) -> None:
    """The app records each call again under another scope (tests/ops_app.py): the panels
    above equal spendmeter's own numbers although these same-named series are scraped."""
    for metric in (
        "gen_ai_client_cost_USD_total",
        "gen_ai_client_operation_duration_seconds_count",
        "gen_ai_client_token_usage_sum",
    ):
        other = run.query(f'sum({metric}{{otel_scope_name="{OTHER_SCOPE}"}})')
        ours = run.query(f'sum({metric}{{otel_scope_name="{sc.INSTRUMENTATION_SCOPE}"}})')
        assert single(ours) > 0, metric
        assert single(other) == approx(single(ours)), metric


def test_dashboard_variables_offer_the_app(run: Run) -> None:
    assert label_values(run, "model") == run.spent.models()
    assert SERVICE_NAME in label_values(run, "service")


def check_spend_rate_alert(spent: Spent, result: list[Any]) -> None:
    assert spent.total_cost() < 10
    assert result == []  # the demo spends cents, far under $10 an hour


def check_budget_at_80_percent(spent: Spent, result: list[Any]) -> None:
    assert result == []  # past 100%: LLMBudgetExhausted's, not this one's


def check_budget_exhausted(spent: Spent, result: list[Any]) -> None:
    assert single(result) == approx(spent.total_cost() / BUDGET_USD)


def check_unpriced_alert(spent: Spent, result: list[Any]) -> None:
    expected = {(SERVICE_NAME, *key): count for key, count in spent.unpriced().items()}
    labels = ("job", "gen_ai_request_model", "gen_ai_provider_name")
    assert values(result, *labels) == expected


RULE_CHECKS: dict[str, Callable[[Spent, list[Any]], None]] = {
    "LLMSpendRateHigh": check_spend_rate_alert,
    "LLMBudgetAt80Percent": check_budget_at_80_percent,
    "LLMBudgetExhausted": check_budget_exhausted,
    "LLMUnpricedCalls": check_unpriced_alert,
}


def test_every_rule_is_checked() -> None:
    assert set(RULES) == set(RULE_CHECKS)


@pytest.mark.parametrize("alert", sorted(RULES))
def test_alert_rule_expression(run: Run, alert: str) -> None:
    RULE_CHECKS[alert](run.spent, run.query(RULES[alert]))


def test_alerts_fire_in_prometheus(run: Run) -> None:
    def states() -> dict[str, str]:
        alerts = run.prometheus.api("alerts")["alerts"]
        return {alert["labels"]["alertname"]: alert["state"] for alert in alerts}

    wait_for(lambda: states().get("LLMBudgetExhausted") == "firing", "LLMBudgetExhausted to fire")
    assert states().get("LLMUnpricedCalls") in {"pending", "firing"}  # for: 1m
    assert "LLMBudgetAt80Percent" not in states()
    assert "LLMSpendRateHigh" not in states()
    rules = [rule for group in run.prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == set(RULES)
    assert all(rule["health"] == "ok" for rule in rules), rules
