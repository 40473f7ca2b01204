#!/usr/bin/env bash
# The main job: the two-token phase diagram of model A on its defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tokensde run phase-diagram --out runs/phase-diagram "$@"
