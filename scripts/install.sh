#!/usr/bin/env bash
# Create .venv (if absent) and install pc_gpu into it with the given extras, e.g. "test".
# Usage: scripts/install.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "$extras" ]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
else
    .venv/bin/python -m pip install -q -e .
fi
# Compile the kernels once now (cached on disk), so the first real frame does not pay for it.
.venv/bin/python -m pc_gpu.kernels
