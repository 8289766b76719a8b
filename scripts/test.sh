#!/usr/bin/env bash
# Install pc_gpu with its test extras (and redis-server, chromium and chromium-driver where
# missing), then run the tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -m gpu
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
scripts/ensure_redis.sh
scripts/ensure_browser.sh
exec .venv/bin/python -m pytest "$@"
