#!/usr/bin/env bash
# Install Debian's Redis server for the tests of a core and its edges
# (tests/cluster start their own redis-server on a free port); does nothing when present.
exec "$(dirname "$0")/apt-install.sh" redis-server redis-server
