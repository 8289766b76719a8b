#!/usr/bin/env bash
# Make sure a headless Chromium and its WebDriver are available for the report's browser tests
# (installs Debian's chromium and chromium-driver packages when they are missing and we can).
# The tests skip, with the reason, only where neither is found.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh"
have() { command -v "$1" >/dev/null 2>&1; }
if (have chromium || have chromium-browser) && have chromedriver; then
    exit 0
fi
echo "chromium or chromedriver not found: installing Debian's chromium and chromium-driver" >&2
apt_install chromium chromium-driver || true
if ! { (have chromium || have chromium-browser) && have chromedriver; }; then
    echo "chromium/chromedriver unavailable; the browser tests will be skipped" >&2
fi
