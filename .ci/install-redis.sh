#!/usr/bin/env bash
# Install Debian's Redis server for the cluster tests (tests/cluster start their
# own redis-server on a free port; the package's system service is not needed).
# Idempotent and quiet: does nothing when redis-server is present.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "install-redis: need root to run apt-get install redis-server" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq redis-server >/dev/null
command -v redis-server >/dev/null
echo "install-redis: $(redis-server --version | head -n1)"
