#!/usr/bin/env bash
# The test suite (slow tests excluded; add -m slow to run them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
