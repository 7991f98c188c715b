#!/usr/bin/env bash
# Create (or reuse) a virtual environment with salmask installed editable, and print its path.
# The environment is cached outside the clone, keyed by the dependency list in pyproject.toml, so a
# rerun with unchanged dependencies only re-links the package when the environment last served another clone.
# Works from nothing on a fresh machine.
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
  # the dense-CRF extra compiles from source, and the test extra needs it (the CRF tests must not skip)
  if ! "$venv/bin/python" -m pip install -q -e "$repo[test,crf,lite]" >&2; then
    echo "env.sh: installing salmask[test,crf,lite] failed (above). If pydensecrf2 did not build, install a" \
         "C++ compiler and the Python headers (Debian: apt-get install g++ python3-dev) and rerun; a CPU-only" \
         "pip install salmask without [crf] works with boundary_labels.crf=false" >&2
    rm -rf "$venv"
    exit 1
  fi
  touch "$venv/.complete"
elif [ "$("$venv/bin/python" -c 'import os, salmask; print(os.path.dirname(salmask.__file__))' 2>/dev/null)" \
       != "$repo/src/salmask" ]; then  # the environment serves another clone: link this one
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo" >&2 2>/dev/null \
    || "$venv/bin/python" -m pip install -q --no-deps -e "$repo" >&2
fi
echo "$venv"
