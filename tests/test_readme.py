"""Every Python snippet of the README runs as pasted: offline, each in a fresh namespace."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from spendmeter import LiteLLMInstrumentor
from tests._support import ROOT

README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"^```python\n(.*?)^```$", README, flags=re.DOTALL | re.MULTILINE)


def _shut_down(namespace: dict[str, Any]) -> None:
    """What a snippet leaves running, stopped as its process would stop it at exit."""
    instrumentor = LiteLLMInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    for name in ("tracer_provider", "meter_provider", "budget"):
        if name in namespace:
            namespace[name].shutdown()


@pytest.fixture
def namespace(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    # What the README tells offline readers to set (conftest sets it before LiteLLM loads).
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    found: dict[str, Any] = {"__name__": "__main__"}
    yield found
    _shut_down(found)


def test_the_readme_has_the_snippets_this_test_knows() -> None:
    assert len(SNIPPETS) == 3


def test_the_programmatic_example_prints_its_call_in_the_summary(
    namespace: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    exec(compile(SNIPPETS[0], "README.md: Programmatic", "exec"), namespace)

    summary = capsys.readouterr().err
    assert "LLM SPEND SUMMARY" in summary
    assert re.search(r"Total requests:\s+1\n", summary)
    assert "gpt-4o-mini" in summary


def test_the_budget_example_counts_its_call(namespace: dict[str, Any]) -> None:
    exec(compile(SNIPPETS[1], "README.md: Budgets", "exec"), namespace)

    assert namespace["answer"].choices[0].message.content == "Hello!"
    assert namespace["budget"].request_count == 1
    assert namespace["budget"].total_cost > 0


def test_the_fleet_example_builds_a_shared_budget(namespace: dict[str, Any]) -> None:
    exec(compile(SNIPPETS[2], "README.md: Sharing a budget across a fleet", "exec"), namespace)

    assert namespace["budget"].name == "search-api"
    assert namespace["budget"].reserve
