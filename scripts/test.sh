#!/usr/bin/env bash
# The test suite (slow tests excluded; add -m slow to run them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the report's browser test drives Debian's chromium through Playwright (no browser download)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
      || echo "warning: could not install chromium; the browser test will fail" >&2
  else
    echo "warning: chromium not found (apt-get install chromium); the browser test will fail" >&2
  fi
fi
exec .venv/bin/python -m pytest -q --durations=30 "$@"
