#!/usr/bin/env bash
# The project's two set-up commands (README): every step installs what it needs itself.
#   Testing/dev.sh demo [OUT]     the main job: headless pipeline on a generated sample case -> OUT/report.html
#   Testing/dev.sh test [ARGS]    ruff, mypy on the cores, pytest (Python 3.11+ with slicer-core), then the
#                                 core tests again on Python 3.9 (the Python of Slicer 5.8) when it exists
#   Testing/dev.sh bench          the benchmarks in benchmarks/
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${MMANNO_VENV:-$ROOT/.venv}
PYTHON=${MMANNO_PYTHON:-}

pick_python() {
  if [ -n "$PYTHON" ]; then echo "$PYTHON"; return; fi
  for candidate in python3.11 python3.12 python3.10 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
      echo "$candidate"; return
    fi
  done
  echo "no Python >= 3.10 found (set MMANNO_PYTHON)" >&2; exit 2
}

# A working Python 3.9 (the Python of Slicer 5.8): on PATH, or a pyenv installation.
find_python39() {
  if python3.9 -c 'import sys' >/dev/null 2>&1; then echo python3.9; return; fi
  local root
  root=$( (pyenv root) 2>/dev/null || echo "$HOME/.pyenv")
  for candidate in "$root"/versions/3.9*/bin/python3.9; do
    if [ -x "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
}

# setup VENV PYTHON EXTRAS: create the environment and (re)install the project when pyproject.toml changed.
setup() {
  local venv=$1 python=$2 extras=$3
  if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "$venv is broken (pip does not run): recreating it" >&2
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv with $python" >&2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
  fi
  local stamp="$venv/.mmanno-installed"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)-$extras"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing mmanno[$extras] into $venv" >&2
    "$venv/bin/python" -m pip install -q -e ".[$extras]"
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    setup "$VENV" "$(pick_python)" dev
    out=${1:-output/demo-$(date +%Y%m%d-%H%M%S)}
    exec "$VENV/bin/mmanno" demo --out "$out"
    ;;
  test)
    setup "$VENV" "$(pick_python)" dev
    "$ROOT/Testing/install_tools.sh"
    # As root (CI) the tools were installed just now, so a test that finds one missing fails.
    if [ "$(id -u)" = 0 ]; then export MMANNO_REQUIRE_TOOLS=${MMANNO_REQUIRE_TOOLS:-1}; fi
    echo "== ruff" >&2
    "$VENV/bin/ruff" check .
    echo "== mypy (cores)" >&2
    "$VENV/bin/mypy" RTSSBridge/RTSSBridgeLib MultiModalAnnotation/MultiModalAnnotationLib QCMetrics/QCMetricsLib
    echo "== pytest" >&2
    "$VENV/bin/python" -m pytest -n 2 --dist loadfile -q "$@"
    py39=$(find_python39)
    if [ -n "$py39" ] && [ -z "${MMANNO_SKIP_PY39:-}" ]; then
      echo "== pytest on Python 3.9 (cores; scene tests need slicer-core, which has no 3.9 wheel)" >&2
      setup "${VENV}39" "$py39" dev
      "${VENV}39/bin/python" -m pytest -n 2 --dist loadfile -q -m "not slicer" "$@"
    else
      echo "== Python 3.9 not found: the 3.9 leg did not run" >&2
    fi
    ;;
  bench)
    setup "$VENV" "$(pick_python)" dev
    "$ROOT/Testing/install_tools.sh"
    if [ -f benchmarks/requirements-peers.txt ]; then
      "$VENV/bin/python" -m pip install -q -r benchmarks/requirements-peers.txt
    fi
    for b in benchmarks/bench_*.py; do "$VENV/bin/python" "$b" "$@"; done
    ;;
  *)
    echo "usage: Testing/dev.sh demo [OUT] | test [pytest args] | bench" >&2
    exit 2
    ;;
esac
