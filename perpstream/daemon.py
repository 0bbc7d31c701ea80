"""The daemon: the actor tree and the web server in one trio run.

Start-up builds the sources the config asks for (price feed, chain), starts
the actor tree (ready once every actor is), then serves HTTP and WebSockets.
Shutdown runs the other way round: stop accepting, say ``goodbye`` and close
1001 to every client, stop the web server, then stop the actor tree
gracefully (each actor finishes its current message; the indexer's cursor
is already durable after every batch).

The roles of a deployment past one process (``--role core`` and ``--role
edge``, over Redis) are in :mod:`perpstream.cluster`; they share
:func:`serve_app` with this one.
"""

from __future__ import annotations

import logging
import os

import trio

import actors
from perpstream.clock import WallClock
from perpstream.config import Config
from perpstream.gc_policy import run_gc_policy
from perpstream.history import StreamHistory
from perpstream.protocol import CloseCode
from perpstream.services.tree import build_tree
from perpstream.sources import Sources, open_sources
from perpstream.web import AppContext, ConnectionGuard, Metrics, create_app, serve
from perpstream.web.connection import Connection
from perpstream.web.health import install_health

__all__ = ["new_guard", "run_daemon", "serve_app"]

log = logging.getLogger("perpstream.daemon")

_DRAIN_TIMEOUT = 5.0


async def _say_goodbye(context: AppContext) -> None:
    """Close every client with goodbye + 1001 and give them a moment to go."""
    connections = [c for c in context.connections if isinstance(c, Connection)]
    for connection in connections:
        connection.close(CloseCode.GOING_AWAY, "server_shutting_down")
    with trio.move_on_after(_DRAIN_TIMEOUT):
        while context.connections:  # noqa: ASYNC110 (connections end in many tasks; polled, bounded by the drain timeout)
            await trio.sleep(0.05)
    if connections:
        log.info("closed %d client connection(s)", len(connections))


def new_guard(config: Config) -> ConnectionGuard:
    return ConnectionGuard(
        send_timeout=config.ws.send_timeout_s,
        # Silent for two ping intervals, or for the send timeout if that
        # is shorter: a client that stopped reading at a low message
        # rate never blocks a send (the kernel buffers absorb it), so
        # silence is how the send timeout is kept for it.
        idle_timeout=min(2 * config.ws.ping_interval_s, config.ws.send_timeout_s),
        ping_interval=config.ws.ping_interval_s,
    )


async def serve_app(
    config: Config,
    context: AppContext,
    guard: ConnectionGuard,
    *,
    shutdown: trio.Event,
    describe: dict[str, str],
    streams: bool = True,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``context``'s app until ``shutdown``; clients are told goodbye first.

    ``streams``: the WebSocket, REST and dashboard routes too (a core serves only health, metrics, debug).
    """
    app = create_app(context, streams=streams)

    async def stop_serving() -> None:
        await shutdown.wait()
        log.info("shutting down: closing client connections")

    async def drain() -> None:
        await _say_goodbye(context)

    async with trio.open_nursery() as nursery:

        async def announce(task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
            await serve(
                app, host=config.server.host, port=config.server.port, guard=guard,
                max_message_bytes=4 * config.ws.max_frame_bytes, compression=config.ws.compression,
                reuse_port=reuse_port, shutdown_trigger=stop_serving, drain=drain, task_status=task_status,
            )
            nursery.cancel_scope.cancel()  # the GC policy ends with the server

        bound = await nursery.start(announce)
        nursery.start_soon(run_gc_policy)
        _log_startup(config, bound, describe, streams=streams)
        task_status.started(bound)


def web_context(config: Config, registry: actors.Registry, clock: WallClock, guard: ConnectionGuard,
                **fields: object) -> AppContext:
    """The web layer's shared state for a server on ``registry``."""
    return AppContext(
        config=config, registry=registry, clock=clock, metrics=Metrics(),
        debug_token=os.environ.get(config.debug.token_env) or None,
        guard_stats=lambda: {"cut_slow": guard.cut_slow, "cut_idle": guard.cut_idle,
                             "protocol_errors": getattr(guard, "protocol_errors", 0)},
        stream_of=guard.stream_of, **fields,  # type: ignore[arg-type]
    )


async def run_daemon(
    config: Config,
    *,
    sources: Sources | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until ``shutdown`` is set; ``task_status`` receives the bound addresses."""
    shutdown = shutdown if shutdown is not None else trio.Event()
    clock = WallClock()
    async with open_sources(config, clock, given=sources) as built:
        streams = config.streams
        history = built.history or StreamHistory.in_memory(
            size=streams.history_size, ttl_s=streams.history_ttl_s, now_ms=clock.now_ms)
        tree = build_tree(config, clock=clock, feed=built.feed, store=built.store, chain=built.chain,
                          history=history)
        async with actors.open_system(tree.root) as system:
            guard = new_guard(config)
            context = web_context(config, system.registry, clock, guard, history=history)
            install_health(context, feed_status=built.feed.status, indexer_status=built.indexer_status)
            await serve_app(config, context, guard, shutdown=shutdown, describe=built.describe,
                            task_status=task_status)
            log.info("web server stopped; stopping actors")
    log.info("stopped")


def _log_startup(config: Config, bound: list[tuple[str, int]], describe: dict[str, str], *, streams: bool) -> None:
    for host, port in bound:
        base = f"{host}:{port}"
        if not streams:
            log.info("serving http://%s (health /healthz /readyz, /metrics, /debug/actors)", base)
            continue
        log.info("serving http://%s (dashboard /, REST /api/v1, health /healthz /readyz, /metrics, /debug/actors)",
                 base)
        log.info("streams ws://%s/api/v1/ws/{prices,market-stats}/{market_id} | positions/{address} | "
                 "liquidations | /api/v1/ws (multiplexed)", base)
    log.info("markets: %s", ", ".join(m.id for m in config.markets))
    for what, where in describe.items():
        log.info("%s: %s", what, where)
