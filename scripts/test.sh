#!/usr/bin/env bash
# Install salmask with its test extras (cached environment) and run the whole test suite.
# The report's browser test needs Debian's chromium: installed here when absent (as root or through
# passwordless sudo); SALMASK_NO_APT=1 skips that, and then the browser test is skipped, saying why.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

install_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  [ "${SALMASK_NO_APT:-0}" = 1 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "test.sh: chromium is not installed and this user cannot apt-get install it; the report's" \
           "browser test will be skipped (install Debian's chromium to run it)" >&2
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: chromium is not installed and there is no apt-get here; the report's browser test" \
         "will be skipped (install chromium to run it)" >&2
    return 0
  fi
  echo "test.sh: installing chromium for the report's browser test (apt-get)" >&2
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } \
      >"${TMPDIR:-/tmp}/salmask-apt.log" 2>&1; then
    echo "test.sh: apt-get install chromium failed (log: ${TMPDIR:-/tmp}/salmask-apt.log); the report's" \
         "browser test will be skipped" >&2
  fi
}

install_chromium
venv="$(bash "$repo/scripts/env.sh")"
cd "$repo"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$venv/bin/python" -m pytest -q "$@"
