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

.PHONY: demo test lint
demo: $(BIN)/activate
	OTEL_SERVICE_NAME=spendmeter-demo \
	OTEL_TRACES_EXPORTER=console \
	OTEL_METRICS_EXPORTER=spend_summary \
	OTEL_LOGS_EXPORTER=none \
	$(BIN)/opentelemetry-instrument $(BIN)/python examples/demo.py

test: $(BIN)/activate
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(BIN)/activate
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
