#!/usr/bin/env bash
# Creates .venv with a CPU build of torch (never a CUDA build) and installs tokensde into it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install --quiet "torch==2.13.0"
fi
# (re)install only when the project's metadata changed since the last install
stamp=.venv/.tokensde-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import tokensde" 2>/dev/null; then
  .venv/bin/pip install --quiet -e ".[test,bench]"
  echo "$want" > "$stamp"
fi
# compile the CPU kernels into numba's cache once (a few seconds the first time; loaded in ~0.4 s afterwards)
.venv/bin/python -m tokensde.kernels
