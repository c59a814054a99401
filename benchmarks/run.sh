#!/usr/bin/env bash
# The overhead benchmark in one command:
#
#   bash benchmarks/run.sh                  # the time modes, interleaved
#   bash benchmarks/run.sh --instructions   # adds the callgrind counts (needs valgrind, gcc)
#   bash benchmarks/run.sh --memory         # adds the 100,000-call tracemalloc run
#
# On two busy cores the time modes took 8 minutes, the counts 11 more, and the memory run,
# slowed down by tracemalloc, about 50. It prints a table and writes
# benchmarks/results/overhead.json (`--out PATH` for another); `--help` lists the counts it
# takes. No LLM call leaves the process: every one is mocked.
#
# It builds its own venv, benchmarks/.venv, with spendmeter's `bench` extra: the peer
# instrumentations it compares with register `opentelemetry_instrumentor` entry points, which
# `opentelemetry-instrument` would load too, so they stay out of the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=benchmarks/.venv
if [ ! -x "$VENV/bin/python" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -e '.[bench]'
    touch "$VENV/.installed"
fi
LITELLM_LOCAL_MODEL_COST_MAP=True exec "$VENV/bin/python" benchmarks/overhead.py "$@"
