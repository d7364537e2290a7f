#!/usr/bin/env bash
# Runs a command with the services the tests use, started fresh and stopped whatever happens:
# PostgreSQL and MariaDB (scripts/databases.sh) and a Pulsar standalone on free loopback ports
# (scripts/pulsar.sh), exported as EDBUS_TEST_PULSAR and EDBUS_TEST_PULSAR_ADMIN.
#   scripts/with-services.sh COMMAND [ARGS...]
# Under CI=true a service that does not start fails the run; elsewhere the command runs without it
# (the tests that need it then skip and say so).
set -euo pipefail
cd "$(dirname "$0")/.."
pulsar_data=$(mktemp -d)
export EDBUS_PULSAR_DATA=$pulsar_data/pulsar
EDBUS_PULSAR_PORT=$(bash scripts/pulsar.sh free-port)
EDBUS_PULSAR_ADMIN_PORT=$(bash scripts/pulsar.sh free-port)
export EDBUS_PULSAR_PORT EDBUS_PULSAR_ADMIN_PORT
export EDBUS_TEST_PULSAR=pulsar://127.0.0.1:$EDBUS_PULSAR_PORT
export EDBUS_TEST_PULSAR_ADMIN=http://127.0.0.1:$EDBUS_PULSAR_ADMIN_PORT
trap 'bash scripts/databases.sh stop; bash scripts/pulsar.sh stop; rm -rf "$pulsar_data"' EXIT
trap 'exit 130' INT TERM
bash scripts/databases.sh start || [ "${CI:-}" != true ]
bash scripts/pulsar.sh start || [ "${CI:-}" != true ]
"$@"
