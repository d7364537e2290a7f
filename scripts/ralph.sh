#!/usr/bin/env bash
# Ralph (ralph-malph on PyPI), a real xAPI 1.0.3 LRS, on loopback with its filesystem backend and HTTP Basic
# credentials, for the xAPI feed (edbus_services.xapi) and its tests. No Docker: PyPI only.
#   scripts/ralph.sh install   create the venv (once): ~/.cache/edbus/ralph-venv, apart from edbus's venv
#   scripts/ralph.sh start     install if needed, write the credentials, start, wait until ready (60 s limit)
#   scripts/ralph.sh stop      stop it (SIGTERM, then SIGKILL after 15 s)
#   scripts/ralph.sh status    running and ready?
#   scripts/ralph.sh wipe      stop it and delete its data (the stored statements)
#   scripts/ralph.sh free-port print a free loopback port (for EDBUS_RALPH_PORT)
# Environment: EDBUS_CACHE (default ~/.cache/edbus), EDBUS_RALPH_DATA (default <cache>/ralph-data),
# EDBUS_RALPH_PORT (default 8100), EDBUS_RALPH_USER / EDBUS_RALPH_PASSWORD (default edbus / edbus-lrs),
# EDBUS_RALPH_PYTHON (default python3.11, else python3).
# The LRS is then http://127.0.0.1:$EDBUS_RALPH_PORT/xAPI/statements; statements are stored, one JSON
# document a line, in $EDBUS_RALPH_DATA/lrs/fs_lrs.jsonl.
#
# Why a launcher instead of `ralph runserver -b fs`: in ralph-malph 5.1.0 the fs LRS backend writes with
# the data backends' default operation type, INDEX, which refuses to write to a file that exists
# (ralph/backends/data/fs.py, _write_bytes: "already exists and overwrite is not allowed"); and every
# statement goes to one file, fs_lrs.jsonl. So the first POST creates it and every later one fails with
# HTTP 500 "Statements bulk indexation failed". The launcher sets FSLRSBackend.default_operation_type to
# APPEND (the same backend's write mode "ab") before Ralph's API module builds its backend, then runs the
# same ASGI app (ralph.api:app) with uvicorn. It also turns off the fs backend's history file for the
# LRS: the API never reads it, and Ralph rewrites the whole file on every read and write (quadratic).
set -euo pipefail
shopt -s inherit_errexit

RALPH_VERSION=5.1.0
cache=${EDBUS_CACHE:-$HOME/.cache/edbus}
venv=$cache/ralph-venv
data=${EDBUS_RALPH_DATA:-$cache/ralph-data}
port=${EDBUS_RALPH_PORT:-8100}
user=${EDBUS_RALPH_USER:-edbus}
password=${EDBUS_RALPH_PASSWORD:-edbus-lrs}
pidfile=$data/ralph.pid
log=$data/ralph.log
base=http://127.0.0.1:$port
# the interpreter of Ralph's venv (the tests' Python 3.11, as the Makefile's, when there is one)
python=${EDBUS_RALPH_PYTHON:-$(command -v python3.11 || command -v python3 || echo python3)}

# Everything the LRS extra installs, pinned, so that a fresh machine gets the versions tested here.
constraints() {
  cat <<'EOF'
annotated-types==0.8.0
anyio==4.16.0
bcrypt==4.2.0
cachetools==5.5.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
dnspython==2.9.2
ecdsa==0.19.2
email-validator==2.4.0
fastapi==0.114.2
h11==0.16.0
httpcore==1.0.9
httptools==0.9.0
httpx==0.28.1
idna==3.20
importlib_metadata==8.5.0
langcodes==3.5.1
pyasn1==0.6.5
pydantic==2.14.4
pydantic-settings==2.16.3
pydantic_core==2.50.5
python-dotenv==1.2.4
python-jose==3.3.0
PyYAML==6.0.4
ralph-malph==5.1.0
requests==2.34.2
rfc3987==1.3.8
rsa==4.9.1
sentry-sdk==2.14.0
six==1.17.0
starlette==0.38.6
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
uvicorn==0.30.6
uvloop==0.23.0
watchfiles==1.3.0
websockets==17.4
zipp==4.1.2
EOF
}

install() {
  [ -f "$venv/.complete" ] && return 0
  mkdir -p "$cache"
  # concurrent test runs share the venv: one installs, the others wait for it (flock: util-linux)
  exec 9>"$cache/ralph-venv.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if [ -f "$venv/.complete" ]; then exec 9>&-; return 0; fi
  echo "ralph.sh: installing ralph-malph[lrs]==$RALPH_VERSION into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  constraints >"$venv/constraints.txt"
  "$venv/bin/pip" install -q --disable-pip-version-check -c "$venv/constraints.txt" \
    "ralph-malph[lrs]==$RALPH_VERSION" requests  # ralph.api imports requests (OIDC), which no extra lists
  touch "$venv/.complete"
  exec 9>&-
}

# auth.json: Ralph's Basic credentials file: a list of users with a bcrypt hash, scopes and an agent.
write_credentials() {
  mkdir -p "$data/lrs"
  EDBUS_RALPH_USER=$user EDBUS_RALPH_PASSWORD=$password "$venv/bin/python" - "$data/auth.json" <<'PY'
import json, os, sys
import bcrypt
user, password = os.environ["EDBUS_RALPH_USER"], os.environ["EDBUS_RALPH_PASSWORD"]
entry = {"username": user, "hash": bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode(),
         "scopes": ["all"], "agent": {"objectType": "Agent", "name": user,
                   "account": {"homePage": "http://127.0.0.1", "name": user}}}
with open(sys.argv[1], "w") as f:
    json.dump([entry], f)
PY
}

write_launcher() {
  cat >"$data/launcher.py" <<'PY'
"""Ralph's LRS on the fs backend, appending: see scripts/ralph.sh for why."""
import os

import uvicorn
from ralph.backends.data.base import BaseOperationType
from ralph.backends.lrs.fs import FSLRSBackend

FSLRSBackend.default_operation_type = BaseOperationType.APPEND  # 5.1.0: INDEX refuses the existing file
FSLRSBackend.append_to_history = lambda self, event: None      # unused by the API, rewritten on every call

uvicorn.run("ralph.api:app", host="127.0.0.1", port=int(os.environ["EDBUS_RALPH_PORT"]), log_level="warning",
            access_log=False)
PY
}

ready() { curl -sf --max-time 2 "$base/__heartbeat__" >/dev/null 2>&1; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start() {
  if running && ready; then echo "ralph.sh: already running (pid $(cat "$pidfile"))"; return 0; fi
  if ready; then
    echo "ralph.sh: another server (not this data folder's) answers on $base; use another port" >&2
    return 1
  fi
  install
  mkdir -p "$data"
  write_credentials
  write_launcher
  cd "$data"
  RALPH_APP_DIR=$data RALPH_AUTH_FILE=$data/auth.json RALPH_RUNSERVER_BACKEND=fs \
    RALPH_RUNSERVER_AUTH_BACKENDS=basic RALPH_BACKENDS__LRS__FS__DEFAULT_DIRECTORY_PATH=$data/lrs \
    EDBUS_RALPH_PORT=$port nohup "$venv/bin/python" "$data/launcher.py" >"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 600); do
    if ready; then echo "ralph.sh: Ralph $RALPH_VERSION ready on $base (pid $(cat "$pidfile"))"; return 0; fi
    if ! running; then break; fi
    sleep 0.1
  done
  echo "ralph.sh: Ralph did not start; its log:" >&2
  cat "$log" >&2
  stop
  return 1
}

stop() {
  if ! running; then rm -f "$pidfile"; echo "ralph.sh: not running"; return 0; fi
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "ralph.sh: stopped"
}

status() {
  if running && ready; then echo "ralph.sh: running and ready on $base (pid $(cat "$pidfile"))"; return 0; fi
  if running; then echo "ralph.sh: running (pid $(cat "$pidfile")) but not ready on $base"; return 1; fi
  echo "ralph.sh: not running"
  return 1
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  wipe) stop; rm -rf "$data" ;;
  free-port) free_port ;;
  *) echo "usage: $0 install|start|stop|status|wipe|free-port" >&2; exit 2 ;;
esac
