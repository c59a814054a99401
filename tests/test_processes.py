"""One summary per process, covering that process's calls only, printed after its spans, however
the process ends: fork, multiprocessing (a Process and a Pool worker), ``sys.exit(1)``, SIGTERM
and an uncaught exception. One app (tests/process_app.py) runs them all, to import LiteLLM once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process_app import CALLS

APP = Path(__file__).resolve().parent / "process_app.py"
SUMMARY = "LLM SPEND SUMMARY"


@pytest.fixture(scope="module")
def ended(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, int]]:
    """Each process's output (stdout and stderr, in order), and the exit codes."""
    out = tmp_path_factory.mktemp("processes")
    parent = subprocess.run(
        [sys.executable, str(APP), str(out)],
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    logs = {name: (out / f"{name}.log").read_text() for name in CALLS if name != "parent"}
    logs["parent"] = parent.stdout
    exit_codes = json.loads((out / "exit_codes.json").read_text())
    exit_codes["parent"] = parent.returncode
    return logs, exit_codes


@pytest.mark.integration
@pytest.mark.parametrize("name", list(CALLS))
def test_each_process_prints_one_summary_of_its_own_calls_after_its_spans(
    ended: tuple[dict[str, str], dict[str, int]], name: str
) -> None:
    logs, _ = ended
    log = logs[name]
    calls = CALLS[name]

    assert log.count(SUMMARY) == 1, log
    assert re.search(rf"Total requests:\s+{calls}\n", log), log
    # Its in-process budget counted its calls only, too.
    assert f"{name}: the budget counted {calls} calls" in log
    # Every span it made was exported, before the summary.
    assert log.count('"gen_ai.operation.name"') == calls
    assert log.rindex('"gen_ai.operation.name"') < log.index(SUMMARY)


@pytest.mark.integration
def test_each_process_ends_with_the_status_it_would_have_had(
    ended: tuple[dict[str, str], dict[str, int]],
) -> None:
    logs, exit_codes = ended

    assert exit_codes == {
        "fork": 0,
        "exit1": 1,
        "sigterm": -signal.SIGTERM,  # killed by SIGTERM, as without spendmeter
        "process": 0,
        "parent": 1,
    }
    assert "RuntimeError: the parent dies of an uncaught exception" in logs["parent"]
