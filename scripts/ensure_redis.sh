#!/usr/bin/env bash
# Make sure a redis-server binary is available for the test fixtures (installs Debian's
# package when it is missing and we can). The tests start their own server on 127.0.0.1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh"
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
echo "redis-server not found: installing Debian's redis-server package" >&2
# (the package may start a system service; the tests use their own server and port)
apt_install redis-server || true
command -v redis-server >/dev/null 2>&1 || {
    echo "redis-server is required by the tests and could not be installed; install it and retry" >&2
    exit 1
}
