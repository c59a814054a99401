"""An instrumented app whose processes end every way a process ends (tests/test_processes.py).

``python tests/process_app.py OUT``: the parent makes its calls, then starts children, one per
way of ending, each after its own number of calls; every child writes its stdout and stderr to
``OUT/<name>.log``. Last, the parent dies of an uncaught exception, its own output on the
usual streams. Children's exit codes go to ``OUT/exit_codes.json``.

Spans wait in a batch that is never exported on a timer: every span in a log was exported by
the process's shutdown.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import litellm
from litellm.litellm_core_utils.thread_pool_executor import executor
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from spendmeter import BudgetSpanProcessor, LiteLLMInstrumentor, SpendSummaryReader

CALLS = {"parent": 2, "fork": 8, "exit1": 3, "sigterm": 5, "process": 6, "pool": 7}


def setup() -> BudgetSpanProcessor:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        BatchSpanProcessor(ConsoleSpanExporter(), schedule_delay_millis=600_000)
    )
    budget = BudgetSpanProcessor(100.0)
    tracer_provider.add_span_processor(budget)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[SpendSummaryReader()]))
    LiteLLMInstrumentor().instrument()
    return budget


# Set up by the parent before it starts any child: every child inherits it.
BUDGET: BudgetSpanProcessor | None = None


def calls(count: int) -> None:
    for _ in range(count):
        litellm.completion(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], mock_response="ok"
        )


def settle_litellm() -> None:
    """Wait for LiteLLM's background logging of the calls made so far. A fork while one of its
    logging threads is busy can leave the child hanging at exit, in concurrent.futures's
    exit hook, with or without spendmeter: that hazard is LiteLLM's, not what is tested here."""
    executor.submit(lambda: None).result()
    time.sleep(0.3)


def own_log(name: str) -> None:
    """From now on this process writes stdout and stderr, in order, to OUT/<name>.log."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(Path(sys.argv[1]) / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def work(name: str) -> None:
    own_log(name)
    calls(CALLS[name])
    assert BUDGET is not None
    print(f"{name}: the budget counted {BUDGET.request_count} calls", flush=True)


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the handler runs before this returns


def forked(name: str, end: Callable[[], None]) -> int:
    settle_litellm()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        work(name)
        end()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main() -> None:
    global BUDGET
    BUDGET = setup()
    calls(CALLS["parent"])
    exit_codes = {
        "fork": forked("fork", lambda: sys.exit(0)),
        "exit1": forked("exit1", lambda: sys.exit(1)),
        "sigterm": forked("sigterm", sigterm),
    }
    fork = multiprocessing.get_context("fork")
    process = fork.Process(target=work, args=("process",))
    settle_litellm()
    process.start()
    process.join()
    exit_codes["process"] = process.exitcode
    settle_litellm()
    pool = fork.Pool(1)
    pool.apply(work, ("pool",))
    pool.close()
    pool.join()
    (Path(sys.argv[1]) / "exit_codes.json").write_text(json.dumps(exit_codes))
    print(f"parent: the budget counted {BUDGET.request_count} calls", flush=True)
    raise RuntimeError("the parent dies of an uncaught exception")


if __name__ == "__main__":
    main()
