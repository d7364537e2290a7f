# The two commands: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint typecheck unit test-secured test-cluster test-openedx-matrix bench bench-wakeup clean

$(STAMP): pyproject.toml services/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==24.3.1"
	$(BIN)/pip install --quiet -e ".[dev]" -e ./services
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
	$(BIN)/ruff check src tests bench integrations services scripts

# The package, then the Tutor plugin against the Tutor it is tested with (its own venv, built once).
typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict --follow-imports=silent scripts/architecture.py
	$(BIN)/python -c "from tests.tutor.tutor_venv import install; install()"
	$(BIN)/mypy --strict --python-executable $$HOME/.cache/edbus/tutor-venv-22.0.3/bin/python integrations/tutor/tutoredbus

# The whole pytest suite with PostgreSQL, MariaDB and a Pulsar standalone (scripts/with-services.sh),
# and Debian's chromium for the dashboard's browser tests.
unit: $(STAMP)
	bash scripts/browser.sh
	bash scripts/with-services.sh $(BIN)/pytest -q

# The contract suite on a Pulsar standalone with TLS, token authentication and authorization.
test-secured: $(STAMP)
	$(BIN)/python -m tests.test_pulsar_security contract

# A Pulsar cluster on loopback (ZooKeeper, 3 bookies, 2 brokers): the contract suite and a short fault run.
# Pulsar 4.2.4, the release docs/pulsar.md recommends (3.0.7, the standalone of `make test`, loses Key_Shared
# order across a broker's SIGKILL: docs/reliability.md, finding 9); EDBUS_PULSAR_VERSION=3.0.7 runs it on 3.0.7
test-cluster: $(STAMP)
	EDBUS_PULSAR_VERSION=$${EDBUS_PULSAR_VERSION:-4.2.4} bash scripts/pulsar-cluster.sh test

# tests/openedx against openedx-events 10.x/Django 4.2 and 11.x/Django 5.2, each in its own venv.
test-openedx-matrix: $(STAMP)
	bash scripts/with-services.sh bash scripts/openedx-matrix.sh

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/embedded.py

bench-wakeup: $(STAMP)
	$(BIN)/python bench/wakeup.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
