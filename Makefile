# The README's two commands: `make demo` and `make test` (`make check`: the fast set). Each
# builds .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LITELLM_LOCAL_MODEL_COST_MAP := True

# CI runs the suite against the oldest LiteLLM pyproject.toml allows too (`make test-oldest`).
OLDEST := .venv-oldest

$(BIN)/activate: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(BIN)/activate

# The oldest LiteLLM, pinned with what it resolved to in constraints-oldest.txt.
$(OLDEST)/bin/activate: pyproject.toml constraints-oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --upgrade pip
	$(OLDEST)/bin/pip install --quiet -c constraints-oldest.txt -e '.[test]'
	touch $(OLDEST)/bin/activate

# Pin the development environment to what .venv has now (after upgrading it on purpose).
.PHONY: constraints
constraints: $(BIN)/activate
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^spendmeter'; } > constraints.new
	mv constraints.new constraints.txt

# The ops tests run a real Prometheus; this installs it from Debian's packages once (skipped
# when promtool and prometheus are already on PATH).
.PHONY: prometheus
prometheus:
	bash scripts/install-server.sh prometheus prometheus promtool

# The shared-ledger tests run a real redis-server on loopback; this installs it from Debian's
# packages once (skipped when redis-server is already on PATH).
.PHONY: redis
redis:
	bash scripts/install-server.sh redis-server redis-server

.PHONY: demo test check test-oldest conformance lint
# The test extra installs openai-v2 beside spendmeter (tests/test_neighbours.py); the demo turns
# it off, as the README advises, so that it shows spendmeter alone.
demo: $(BIN)/activate
	OTEL_SERVICE_NAME=spendmeter-demo \
	OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openai \
	OTEL_TRACES_EXPORTER=console \
	OTEL_METRICS_EXPORTER=spend_summary \
	OTEL_LOGS_EXPORTER=none \
	$(BIN)/opentelemetry-instrument $(BIN)/python examples/demo.py

test: $(BIN)/activate prometheus redis
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The fast set for the edit-test loop: no real servers, subprocesses, sweeps or stress runs.
check: $(BIN)/activate
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not integration and not slow"

# The suite (not ruff) against the oldest LiteLLM supported.
test-oldest: $(OLDEST)/bin/activate prometheus redis
	$(OLDEST)/bin/python -m pytest -q

# The pricing conformance sweep over LiteLLM's whole price map (the suite runs a sample).
conformance: $(BIN)/activate
	SPENDMETER_CONFORMANCE=full $(BIN)/python -m pytest -q tests/test_conformance.py

lint: $(BIN)/activate
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
