"""systemd's readiness protocol (sd_notify): one datagram to ``$NOTIFY_SOCKET``.

With ``Type=notify`` systemd considers the service started only when it
says ``READY=1``: here once the actor tree runs and the port is bound, so
units ordered after perpstream (a proxy, a liquidator bot) never start
against a closed port, and a daemon that fails before binding is reported
as a failed start, not a started service that dies. No library is needed:
the protocol is a text datagram on a unix socket (an abstract one when the
path starts with ``@``). Outside systemd the variable is unset and nothing
is sent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["notify"]

log = logging.getLogger("perpstream.systemd")


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``, ``STATUS=…`` lines); True if a manager was told."""
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        # Telling the manager is a courtesy; failing to must never stop the daemon.
        log.warning("could not notify the service manager at %s: %s", path, exc)
        return False
    return True
