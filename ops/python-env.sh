#!/usr/bin/env bash
# ops/python-env.sh — create or update the Python venv for the browser and API-fuzzing tests
# (tests/api) and the benchmark helpers (ops/bench/*.py) with the pinned packages of
# ops/python-requirements.txt, then print the venv's python on stdout (nothing else goes to
# stdout).
#   venv: ${GPULEDGER_VENV:-$ROOT/build/venv}; interpreter: ${GPULEDGER_PYTHON:-/usr/bin/python3}
#   (Debian's, which needs the apt package python3-venv).
# Idempotent and quick when nothing changed: a stamp in the venv records the hash of the
# requirements and the interpreter's version; pip runs only when either changed. Concurrent
# runs (parallel ctest) wait for each other on a lock file beside the venv.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${GPULEDGER_VENV:-$ROOT/build/venv}
REQ=$ROOT/ops/python-requirements.txt
PY=${GPULEDGER_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3)

log() { printf 'python-env: %s\n' "$*" >&2; }
die() { printf 'python-env: ERROR: %s\n' "$*" >&2; exit 1; }

want=$( { sha256sum <"$REQ"; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum)
want=${want%% *}
stamp=$VENV/.gpuledger-requirements
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
# Another run may have finished the work while this one waited for the lock.
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pip' 2>/dev/null; then
  log "creating $VENV with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" >&2 ||
    die "cannot create a venv with $PY (on Debian: apt-get install python3-venv)"
fi
log "installing $(grep -cv '^\s*\(#\|$\)' "$REQ") pinned package(s) from ${REQ#"$ROOT"/} into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQ" >&2 ||
  die "pip install -r $REQ failed (see above): check the network to PyPI"
echo "$want" >"$stamp"
echo "$VENV/bin/python"
