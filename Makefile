# The two commands: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==24.3.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edbus demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	@pulsar_data=$$(mktemp -d); export EDBUS_PULSAR_DATA=$$pulsar_data/pulsar; \
	export EDBUS_PULSAR_PORT=$$(bash scripts/pulsar.sh free-port) EDBUS_PULSAR_ADMIN_PORT=$$(bash scripts/pulsar.sh free-port); \
	export EDBUS_TEST_PULSAR=pulsar://127.0.0.1:$$EDBUS_PULSAR_PORT EDBUS_TEST_PULSAR_ADMIN=http://127.0.0.1:$$EDBUS_PULSAR_ADMIN_PORT; \
	trap 'bash scripts/databases.sh stop; bash scripts/pulsar.sh stop; rm -rf "$$pulsar_data"' EXIT; \
	bash scripts/databases.sh start && { bash scripts/pulsar.sh start || [ "$$CI" != true ]; } && $(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/embedded.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
