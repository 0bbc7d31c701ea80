#!/usr/bin/env bash
# Install Debian's Chromium and its WebDriver for the dashboard's browser tests
# (tests/browser); does nothing when both are present.
exec "$(dirname "$0")/apt-install.sh" "chromium chromedriver" chromium chromium-driver
