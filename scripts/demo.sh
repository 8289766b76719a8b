#!/usr/bin/env bash
# Install pc_gpu, build a Gaia chunk tree around a demo field from the bundled real Gaia DR3
# sample (plus marked synthetic faint stars), simulate one raw frame, reduce it with pc-proc,
# and print the zeropoint, sky and where the outputs are.
# Usage: scripts/demo.sh [WORKDIR]   (default: ./demo_output)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
work="${1:-demo_output}"
exec .venv/bin/python -m pc_gpu.demo "$work"
