#!/usr/bin/env bash
# Install Debian packages a test set needs, unless the commands they provide
# are already there:  .ci/apt-install.sh "COMMAND..." PACKAGE...
# Idempotent and quiet; needs root (or passwordless sudo) on Debian/Ubuntu;
# never downloads anything but the distribution's own packages.
set -euo pipefail

commands=($1)
shift
have_all() {
    for command in "${commands[@]}"; do
        command -v "$command" >/dev/null 2>&1 || return 1
    done
}
have_all && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "apt-install: need root to run apt-get install $*" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq "$@" >/dev/null
have_all
echo "apt-install: installed $*"
