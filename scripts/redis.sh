#!/usr/bin/env bash
# The Redis event bus of Open edX (edx-event-bus-redis) beside edbus, for side-by-side benchmarks only:
# a throwaway redis-server from Debian's packages on a loopback port, and a virtualenv with the Redis event
# bus from PyPI, apart from edbus's own (it brings its own Django, edx-django-utils and walrus).
#   scripts/redis.sh install          the Debian package (if missing) and the venv (once)
#   scripts/redis.sh start [durable]  a fresh server (no persistence, as Redis event-bus deployments
#                                     commonly run; `durable`: appendonly with appendfsync always), prints
#                                     its URL
#   scripts/redis.sh stop             stop it and remove its data
#   scripts/redis.sh python           print the venv's python
# Environment: EDBUS_CACHE (default ~/.cache/edbus), EDBUS_REDIS_DATA (default <cache>/redis-data),
# EDBUS_REDIS_PORT (default: a free port).
set -euo pipefail
shopt -s inherit_errexit

BUS_VERSION=0.6.1          # edx-event-bus-redis, the version measured in issue 13
EVENTS_VERSION=10.5.0      # openedx-events, as in edbus's own venv
DJANGO_VERSION=5.2.19      # as in edbus's own venv
cache=${EDBUS_CACHE:-$HOME/.cache/edbus}
venv=$cache/redis-bus-venv-$BUS_VERSION
data=${EDBUS_REDIS_DATA:-$cache/redis-data}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

install() {
  if ! command -v redis-server >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "redis.sh: install redis-server (needs root)" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  fi
  if [ ! -f "$venv/.complete" ]; then
    echo "redis.sh: creating $venv (edx-event-bus-redis $BUS_VERSION)" >&2
    rm -rf "$venv"
    "${EDBUS_REDIS_PYTHON:-python3.11}" -m venv "$venv"
    "$venv/bin/pip" install --quiet "pip==24.3.1"
    "$venv/bin/pip" install --quiet "edx-event-bus-redis==$BUS_VERSION" "openedx-events==$EVENTS_VERSION" \
      "Django==$DJANGO_VERSION"
    touch "$venv/.complete"
  fi
}

stop() {
  if [ -f "$data/redis.pid" ]; then
    local pid; pid=$(cat "$data/redis.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}

start() {
  install
  stop
  mkdir -p "$data"
  local port=${EDBUS_REDIS_PORT:-$(free_port)} persistence=(--save "" --appendonly no)
  [ "${1:-}" = durable ] && persistence=(--save "" --appendonly yes --appendfsync always)
  redis-server --bind 127.0.0.1 --port "$port" --dir "$data" --daemonize yes --pidfile "$data/redis.pid" \
    --logfile "$data/redis.log" "${persistence[@]}"
  for _ in $(seq 1 100); do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then echo "redis://127.0.0.1:$port/0"; return 0; fi
    sleep 0.1
  done
  echo "redis.sh: redis-server did not start; its log:" >&2; tail -20 "$data/redis.log" >&2 || true; exit 1
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop ;;
  python) echo "$venv/bin/python" ;;
  *) echo "usage: $0 install|start [durable]|stop|python" >&2; exit 2 ;;
esac
