#!/usr/bin/env bash
# Create (or reuse) a virtual environment with salmask installed editable, and print its path.
# The environment is cached outside the clone, keyed by the dependency list in pyproject.toml, so a
# rerun with unchanged dependencies only re-links the package. Works from nothing on a fresh machine.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
key="$( (cat "$repo/pyproject.toml"; "$python" --version 2>&1) | sha256sum | cut -c1-12)"
venv="${SALMASK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/salmask/venv-$key}"
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  # the dense-CRF extra compiles from source; where it does not, the environment is made without it and
  # says so: runs asking for the CRF (boundary_labels.crf=true, the default) then stop at pre-flight
  if ! "$venv/bin/python" -m pip install -q -e "$repo[test,crf,lite]" >&2; then
    echo "env.sh: WARNING: the dense CRF (pydensecrf2) did not build; installed without salmask[crf]." \
         "Runs with boundary_labels.crf=true (the default) will stop at pre-flight and the tests that need" \
         "the CRF fail; install a C++ compiler and Python headers, then delete $venv and rerun" >&2
    "$venv/bin/python" -m pip install -q -e "$repo[test,lite]" >&2
  fi
  touch "$venv/.complete"
else
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo" >&2 2>/dev/null \
    || "$venv/bin/python" -m pip install -q --no-deps -e "$repo" >&2
fi
echo "$venv"
