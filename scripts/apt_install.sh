# Sourced by the ensure_*.sh scripts. apt_install [APT-GET OPTIONS] PACKAGE... installs
# Debian packages quietly with apt-get (through sudo when not root). Returns 2 when apt-get is
# not there, apt-get's status otherwise.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 2
    local sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    $sudo apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
