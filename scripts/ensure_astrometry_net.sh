#!/usr/bin/env bash
# Make sure astrometry.net's solve-field and build-astrometry-index are available for the
# plate-solving peer benchmark (benchmarks/bench_solve_peer.py). Installs Debian's
# astrometry.net package when they are missing and apt-get is there; otherwise says so and
# exits 1. Not part of the test run. The package brings no index files: the benchmark builds
# its own from the Gaia chunk tree.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh"
have_solver() { command -v solve-field >/dev/null 2>&1 && command -v build-astrometry-index >/dev/null 2>&1; }
if have_solver; then
    exit 0
fi
echo "solve-field not found: installing Debian's astrometry.net package" >&2
status=0
apt_install --no-install-recommends astrometry.net || status=$?
if [ "$status" = 2 ]; then
    echo "apt-get is not available: install astrometry.net (https://astrometry.net/use.html) and retry" >&2
    exit 1
fi
have_solver || {
    echo "astrometry.net could not be installed (solve-field or build-astrometry-index missing)" >&2
    exit 1
}
