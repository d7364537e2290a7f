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

# The demo with the xAPI feed: a Ralph LRS (scripts/ralph.sh, installed the first time) on a free port with
# fresh data and a random password, stopped and removed at the end whatever happens. Without Ralph (no
# network for its first install) the demo runs without the xAPI feed, and says so.
demo: $(STAMP)
	@ralph_data=$$(mktemp -d); \
	export EDBUS_RALPH_DATA=$$ralph_data EDBUS_RALPH_PORT=$$(bash scripts/ralph.sh free-port) EDBUS_RALPH_USER=edbus \
	       EDBUS_RALPH_PASSWORD=$$($(BIN)/python -c 'import secrets; print(secrets.token_hex(12))'); \
	export EDBUS_LRS_PASSWORD=$$EDBUS_RALPH_PASSWORD; \
	trap 'bash scripts/ralph.sh stop >/dev/null; rm -rf "$$ralph_data"' EXIT; trap 'exit 130' INT TERM; \
	if bash scripts/ralph.sh start; then \
	  $(BIN)/edbus demo --lrs http://127.0.0.1:$$EDBUS_RALPH_PORT/xAPI/ --lrs-user $$EDBUS_RALPH_USER; \
	else echo "make demo: Ralph did not start (above): the demo runs without the xAPI feed" >&2; $(BIN)/edbus demo; fi

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
