"""The daemon: the actor tree and the web server in one trio run."""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from perpstream.config import Config
from perpstream.web import create_app

__all__ = ["run_daemon"]

log = logging.getLogger("perpstream.daemon")


async def run_daemon(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set (or forever)."""
    shutdown = shutdown or trio.Event()
    hypercorn_config = HypercornConfig()
    hypercorn_config.bind = [f"{config.server.host}:{config.server.port}"]
    hypercorn_config.accesslog = None
    app = create_app()
    log.info("serving on http://%s:%d", config.server.host, config.server.port)
    task_status.started()
    await serve(app, hypercorn_config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
