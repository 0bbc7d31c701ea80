"""Logging set-up: readable text for a terminal, JSON lines for a collector."""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["configure_logging"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the fields log pipelines index on."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send perpstream's logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request access lines from the ASGI server drown the service's own logs.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    # httpx logs every request at INFO: the indexer's polls and the feed's
    # reconnects would be two lines a second; coredis each retry. Failures are
    # logged by their callers.
    for name in ("httpx", "httpcore", "coredis"):
        logging.getLogger(name).setLevel(logging.WARNING)
