#!/usr/bin/env bash
# Throwaway PostgreSQL and MariaDB servers for the outbox tests, on loopback ports, never the system services.
#   scripts/databases.sh start   install the Debian packages if missing, initialise fresh clusters, start them,
#                                write the connection URLs to $EDBUS_DB_DIR/urls.env
#   scripts/databases.sh stop    stop both servers and remove their data
# Environment: EDBUS_DB_DIR (default /tmp/edbus-databases-<hash of this checkout's path>, so two checkouts'
# test runs never share servers), EDBUS_PG_PORT and EDBUS_MARIADB_PORT (default: free ports).
set -eEuo pipefail
trap 'echo "databases.sh: failed at line $LINENO (exit $?)" >&2' ERR
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
DIR="${EDBUS_DB_DIR:-/tmp/edbus-databases-$(printf %s "$ROOT" | md5sum | cut -c1-12)}"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

as_owner() {  # the servers refuse to run as root: run them as their packages' system users
  local user="$1"; shift
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u "$user" -- "$@"); else "$@"; fi
}

install_packages() {
  local missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v mariadb-install-db >/dev/null 2>&1 && command -v mariadbd >/dev/null 2>&1 \
    || missing+=(mariadb-server mariadb-client)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then echo "databases.sh: install ${missing[*]} (needs root)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

wait_for() {  # wait_for <what> <log> <command...>: poll with a deadline, show the log on failure
  local what="$1" log="$2"; shift 2
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "databases.sh: $what did not start; its log:" >&2; tail -50 "$log" >&2 || true; exit 1
}

start_postgres() {
  local bin; bin="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
  mkdir -p "$DIR/pg"; [ "$(id -u)" = 0 ] && chown postgres: "$DIR/pg"
  as_owner postgres "$bin/initdb" -D "$DIR/pg/data" -U edbus --auth=trust -E UTF8 --no-sync >"$DIR/pg/initdb.log" 2>&1 \
    || { cat "$DIR/pg/initdb.log" >&2; exit 1; }
  as_owner postgres "$bin/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $DIR/pg -c max_connections=200 -c shared_buffers=128MB" >/dev/null
  wait_for PostgreSQL "$DIR/pg/server.log" "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT"
  as_owner postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U edbus -d postgres -qc "CREATE DATABASE edbus" >/dev/null
}

start_mariadb() {
  mkdir -p "$DIR/mariadb"; [ "$(id -u)" = 0 ] && chown mysql: "$DIR/mariadb"
  local user=(); [ "$(id -u)" = 0 ] && user=(--user=mysql)
  mariadb-install-db "${user[@]}" --no-defaults --datadir="$DIR/mariadb/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$DIR/mariadb/install.log" 2>&1 || { cat "$DIR/mariadb/install.log" >&2; exit 1; }
  mariadbd --no-defaults "${user[@]}" --datadir="$DIR/mariadb/data" --bind-address=127.0.0.1 --port="$MY_PORT" \
    --socket="$DIR/mariadb/mysqld.sock" --pid-file="$DIR/mariadb/mysqld.pid" --log-error="$DIR/mariadb/server.log" \
    --max-connections=300 --innodb-buffer-pool-size=128M >/dev/null 2>&1 &
  wait_for MariaDB "$DIR/mariadb/server.log" mariadb --no-defaults -uroot --socket="$DIR/mariadb/mysqld.sock" -e "SELECT 1"
  mariadb --no-defaults -uroot --socket="$DIR/mariadb/mysqld.sock" -e \
    "CREATE USER 'edbus'@'127.0.0.1' IDENTIFIED BY 'edbus'; GRANT ALL ON *.* TO 'edbus'@'127.0.0.1';
     CREATE DATABASE edbus;"
}

stop() {
  local bin
  if [ -f "$DIR/pg/data/postmaster.pid" ]; then
    bin="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")"
    as_owner postgres "$bin/pg_ctl" -D "$DIR/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -f "$DIR/mariadb/mysqld.pid" ]; then
    local pid; pid="$(cat "$DIR/mariadb/mysqld.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$DIR"
}

case "${1:-}" in
  start)
    PG_PORT="${EDBUS_PG_PORT:-$(free_port)}"
    MY_PORT="${EDBUS_MARIADB_PORT:-$(free_port)}"
    install_packages
    stop
    mkdir -p "$DIR"; chmod 755 "$DIR"
    start_postgres
    start_mariadb
    cat >"$DIR/urls.env" <<URLS
EDBUS_TEST_POSTGRES_URL=postgresql+psycopg://edbus@127.0.0.1:$PG_PORT/edbus
EDBUS_TEST_MARIADB_URL=mysql+pymysql://edbus:edbus@127.0.0.1:$MY_PORT/edbus
URLS
    echo "databases.sh: PostgreSQL on 127.0.0.1:$PG_PORT, MariaDB on 127.0.0.1:$MY_PORT ($DIR/urls.env)"
    ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
