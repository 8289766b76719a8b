#!/usr/bin/env bash
# Make sure astrometry.net's solve-field and build-astrometry-index are available for the
# plate-solving peer benchmark (benchmarks/bench_solve_peer.py). Installs Debian's
# astrometry.net package when they are missing and apt-get is there; otherwise says so and
# exits 1. Not part of the test run. The package brings no index files: the benchmark builds
# its own from the Gaia chunk tree.
set -euo pipefail
if command -v solve-field >/dev/null 2>&1 && command -v build-astrometry-index >/dev/null 2>&1; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    echo "solve-field not found: installing Debian's astrometry.net package" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        astrometry.net >/dev/null
else
    echo "solve-field not found and apt-get is not available: install astrometry.net" \
         "(https://astrometry.net/use.html) and retry" >&2
    exit 1
fi
command -v solve-field >/dev/null 2>&1 && command -v build-astrometry-index >/dev/null 2>&1 || {
    echo "astrometry.net could not be installed (solve-field or build-astrometry-index missing)" >&2
    exit 1
}
