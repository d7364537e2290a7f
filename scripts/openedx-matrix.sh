#!/usr/bin/env bash
# tests/openedx against the versions of openedx-events and Django that Open edX runs, each in its own
# virtualenv (built once, cached under ~/.cache/edbus/openedx-matrix, rebuilt when its pins change).
# The main .venv keeps what pyproject.toml resolves; `make unit` tests that one.
#   scripts/openedx-matrix.sh            build what is missing, then run tests/openedx in every env
#   scripts/openedx-matrix.sh build      build only
#   scripts/openedx-matrix.sh list       the envs and their pins
# Environment: EDBUS_CACHE (default ~/.cache/edbus), PYTHON (default python3.11), and whatever the tests
# read (EDBUS_TEST_PULSAR, EDBUS_TEST_PULSAR_ADMIN, CI). Under CI=true a venv that cannot be built fails
# the run; elsewhere that env is reported and skipped.
#
# openedx-events 11.x declares Requires-Python >=3.12 while its wheel is pure Python and runs on 3.11:
# that env alone is installed with pip's --ignore-requires-python, for this test only (docs/openedx.md).
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${EDBUS_CACHE:-$HOME/.cache/edbus}/openedx-matrix
python=${PYTHON:-python3.11}

# name | pins of the two axes | pip options
ENVS=(
  "django42-events10|Django==4.2.30 openedx-events==10.5.0|"
  "django52-events11|Django==5.2.19 openedx-events==11.2.0|--ignore-requires-python"
)
# everything else, pinned to what the main venv resolved (so a failure is about the two axes)
COMMON="pip==24.3.1 setuptools==80.9.0 attrs==26.1.0 fastavro==1.13.1 click==8.5.1 rich==15.0.0
edx-opaque-keys==4.0.0 edx-ccx-keys==2.0.2 edx-django-utils==8.1.0 pulsar-client==3.13.0 httpx==0.29.0
pytest==9.2.0"

field() { local IFS='|'; read -r -a parts <<<"$1"; echo "${parts[$2]:-}"; }

build() {  # build() NAME PINS OPTIONS: a fresh venv in a temporary folder, moved into place when complete
  local name=$1 pins=$2 options=$3 dir=$cache/$1
  local key; key=$(printf '%s\n' "$($python -VV)" "$root" "$pins" "$options" "$COMMON" | sha256sum | cut -c1-16)
  if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$key" ]; then
    return 0
  fi
  echo "openedx-matrix: building $name ($pins)" >&2
  rm -rf "$dir" "$dir.tmp"
  mkdir -p "$cache"
  "$python" -m venv "$dir.tmp"
  # shellcheck disable=SC2086  # pins and options are word lists
  "$dir.tmp/bin/pip" install --quiet --disable-pip-version-check $options $COMMON $pins -e "$root[openedx,pulsar]" \
    >"$dir.tmp/install.log" 2>&1 || { cat "$dir.tmp/install.log" >&2; return 1; }
  # venv scripts name their folder: build in .tmp, then fix the paths as the folder moves into place
  grep -rlF "$dir.tmp" "$dir.tmp/bin" | xargs sed -i "s|$dir.tmp|$dir|g"
  mv "$dir.tmp" "$dir"
  echo "$key" >"$dir/.complete"
}

build_all() {  # prints the names of the envs that are ready
  local spec name failed=0
  command -v "$python" >/dev/null || { echo "openedx-matrix: no $python to build the envs with (set PYTHON)" >&2; return 1; }
  for spec in "${ENVS[@]}"; do
    name=$(field "$spec" 0)
    if build "$name" "$(field "$spec" 1)" "$(field "$spec" 2)"; then
      echo "$name"
    else
      failed=1
      echo "openedx-matrix: could not build $name (above)" >&2
      if [ "${CI:-}" = true ]; then return 1; fi
    fi
  done
  [ "$failed" = 0 ] || echo "openedx-matrix: some envs were not built; not under CI, running the others" >&2
}

run() {  # the envs side by side (their tests mostly wait on subprocesses and the broker), then their output
  local ready name status=0 logs result
  ready=$(build_all)
  [ -n "$ready" ] || { echo "openedx-matrix: no env could be built" >&2; return 1; }
  logs=$(mktemp -d)
  cd "$root"
  declare -A pids
  for name in $ready; do
    "$cache/$name/bin/python" -c 'import django, openedx_events
print("Django", django.__version__, "openedx-events", openedx_events.__version__)' >"$logs/$name"
    "$cache/$name/bin/python" -m pytest -q -p no:cacheprovider tests/openedx >>"$logs/$name" 2>&1 &
    pids[$name]=$!
  done
  for name in $ready; do
    if wait "${pids[$name]}"; then result=passed; else result=FAILED; status=1; fi
    echo "openedx-matrix: tests/openedx in $name: $result, $(head -1 "$logs/$name")" >&2
    tail -n +2 "$logs/$name" >&2
  done
  rm -rf "$logs"
  return $status
}

case ${1:-run} in
  run) run ;;
  build) build_all >/dev/null ;;
  list) printf '%s\n' "${ENVS[@]}" ;;
  *) echo "usage: $0 [run|build|list]" >&2; exit 2 ;;
esac
