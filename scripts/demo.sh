#!/usr/bin/env bash
# Install salmask (cached environment) and run the demo on the synthetic default. Extra arguments go to
# `salmask demo` (e.g. --quick, --work-dir DIR).
set -euo pipefail
venv="$(bash "$(dirname "${BASH_SOURCE[0]}")/env.sh")"
exec "$venv/bin/salmask" demo "$@"
