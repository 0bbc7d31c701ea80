#!/usr/bin/env bash
# Install Debian's Chromium and its WebDriver for the dashboard's browser tests
# (tests/browser). Idempotent and quiet: does nothing when both are present.
# Needs root (or passwordless sudo) on Debian/Ubuntu; never downloads a browser
# from anywhere but the distribution's own packages.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "install-browser: need root to run apt-get install chromium chromium-driver" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null

command -v chromium >/dev/null && command -v chromedriver >/dev/null
echo "install-browser: $(chromium --version 2>/dev/null | head -n1)"
