# The README's two commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LITELLM_LOCAL_MODEL_COST_MAP := True

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/activate

# The ops tests run a real Prometheus; this installs it from Debian's packages once (skipped
# when promtool and prometheus are already on PATH).
.PHONY: prometheus
prometheus:
	bash scripts/install-prometheus.sh

# The shared-ledger tests run a real redis-server on loopback; this installs it from Debian's
# packages once (skipped when redis-server is already on PATH).
.PHONY: redis
redis:
	bash scripts/install-redis.sh

.PHONY: demo test lint
demo: $(BIN)/activate
	OTEL_SERVICE_NAME=spendmeter-demo \
	OTEL_TRACES_EXPORTER=console \
	OTEL_METRICS_EXPORTER=spend_summary \
	OTEL_LOGS_EXPORTER=none \
	$(BIN)/opentelemetry-instrument $(BIN)/python examples/demo.py

test: $(BIN)/activate prometheus redis
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(BIN)/activate
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
