"""Serve the app with hypercorn's trio worker over guarded socket streams.

Why not plain ``hypercorn.trio.serve``: its TCP server writes every frame
with ``stream.send_all`` inside a *shielded* cancel scope behind a
per-connection lock. A peer that stops reading fills its TCP window, the
send blocks, and no timeout set by the application can reach it: the
sending task is pinned, and pings and closes queue behind the same lock.
Hypercorn's own WebSocket pings are never checked for answers, so a peer
that vanished without a FIN lingers until TCP gives up; and its ping task
sleeps through a close, holding a finished connection (and a graceful
shutdown) for up to a whole ping interval.

The fix sits below the shield. Every accepted socket is wrapped in a
:class:`GuardedStream` that records when a send started blocking and when
bytes last arrived. One :class:`ConnectionGuard` task sweeps all streams
(one timer for the whole server, not one per connection) and force-closes
a stream by the time its send has been blocked for ``send_timeout`` or it
has been silent for ``idle_timeout``. The same task sends the
WebSocket pings, every ``ping_interval``, to every open WebSocket; a live
peer answers with a pong, which counts as bytes received. Each connection
has a ping time of its own, spread over the interval: pinging 10,000
clients at once brings 10,000 pongs back at once, and handling them held
up every stream once per interval (the fan-out benchmark's p99 at 10,000
clients was about 400 ms with the burst, about 150 ms without). Closing the
socket wakes the blocked ``send_all`` with an error; hypercorn then reports
``websocket.disconnect`` to the application, which ends the connection's
handler and frees its buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol import ws_stream
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from perpstream.web.stream import GuardedStream

__all__ = ["ConnectionGuard", "serve"]

log = logging.getLogger("perpstream.web.server")

# The fractional part of the golden ratio: multiples of it modulo 1 fill [0, 1) evenly.
_GOLDEN = (5**0.5 - 1) / 2
# A WebSocket ping frame from a server: FIN + opcode 0x9, unmasked, no payload.
PING_FRAME = b"\x89\x00"


class ConnectionGuard:
    """Sweeps every open stream and cuts the stuck and the silent ones."""

    def __init__(
        self, *, send_timeout: float, idle_timeout: float | None, ping_interval: float | None = None
    ) -> None:
        self.send_timeout = send_timeout
        self.idle_timeout = idle_timeout
        self.ping_interval = ping_interval
        #: How often the guard sweeps: a quarter of the shortest timeout, at most a second.
        timeouts = [send_timeout] if idle_timeout is None else [send_timeout, idle_timeout]
        self.period = min(1.0, *(timeout / 4 for timeout in timeouts))
        self.streams: dict[GuardedStream, TCPServer | None] = {}
        self.by_peer: dict[tuple[str, int], GuardedStream] = {}
        self.cut_slow = 0
        self.cut_idle = 0
        self.pings_sent = 0
        self._wrapped = 0

    def wrap(self, stream: trio.SocketStream) -> GuardedStream:
        guarded = GuardedStream(stream)
        if self.ping_interval is not None:
            # The n-th connection's first ping comes after a fraction of the
            # interval taken from the golden-ratio sequence, which spreads any
            # number of connections, however they arrive, evenly over it.
            self._wrapped += 1
            guarded.ping_due = trio.current_time() + self.ping_interval * ((self._wrapped * _GOLDEN) % 1.0)
        self.streams[guarded] = None
        try:
            self.by_peer[_peer(stream)] = guarded
        except OSError:
            pass  # the peer is already gone
        return guarded

    def release(self, stream: GuardedStream) -> None:
        self.streams.pop(stream, None)
        for peer, known in list(self.by_peer.items()):
            if known is stream:
                del self.by_peer[peer]
                break

    def stream_of(self, client: tuple[str, int] | None) -> GuardedStream | None:
        """The stream of the connection whose peer is ``client`` (an ASGI scope's ``client``)."""
        return None if client is None else self.by_peer.get((client[0], client[1]))

    def close_idle_keep_alives(self) -> int:
        """At shutdown: close HTTP connections waiting for their next request.

        Hypercorn would otherwise hold them until its graceful timeout; a
        browser always keeps one after a fetch. Connections with a request or
        a WebSocket in progress are left to finish.
        """
        closed = 0
        for stream, server in list(self.streams.items()):
            protocol = getattr(getattr(server, "protocol", None), "protocol", None)
            if isinstance(protocol, H11Protocol) and protocol.stream is None:
                stream.cut("server shutting down", abort=False)
                closed += 1
        return closed

    def sweep(self) -> None:
        """One pass over every stream: cut the stuck and the silent, ping the due.

        A stream is cut at the sweep before it would pass its send or idle
        timeout rather than up to one after: the timeouts are deadlines a
        client can rely on (a client that stopped reading is gone within
        ``send_timeout``), not thresholds.
        """
        now = trio.current_time()
        for stream, server in list(self.streams.items()):
            if stream.cut_reason is not None:
                continue  # already cut; its handler is on its way out
            blocked = stream.send_blocked_since
            if blocked is not None and now - blocked > self.send_timeout - self.period:
                self.cut_slow += 1
                log.info("cutting a client that stopped reading (send blocked %.1f s)", now - blocked)
                stream.cut("send timed out: the peer stopped reading")
            elif self.idle_timeout is not None and now - stream.last_receive > self.idle_timeout - self.period:
                self.cut_idle += 1
                log.info("cutting a silent client (no bytes, not even a pong, for %.1f s)",
                         now - stream.last_receive)
                stream.cut("the peer stopped answering pings")
            elif self.ping_interval is not None and stream.ping_due <= now:
                self._ping(stream, server, now + self.ping_interval)

    def _ping(self, stream: GuardedStream, server: TCPServer | None, next_due: float) -> None:
        """Ping an open WebSocket, between whole frames.

        The stream's fast lane keeps the ping between whole frames without
        waiting; a connection busy sending (the send timeout watches it), or
        not yet upgraded, is tried again on the next sweep.
        """
        protocol = getattr(getattr(server, "protocol", None), "protocol", None)
        ws = getattr(protocol, "stream", None)
        if server is None or not isinstance(ws, WSStream) or ws.state is not ASGIWebsocketState.CONNECTED:
            return
        # hypercorn marks the stream CONNECTED before it writes the 101
        # response; a ping must never go out ahead of the handshake.
        if not stream.upgraded or stream.busy:
            return
        if stream.try_write(PING_FRAME):
            stream.ping_due = next_due
            self.pings_sent += 1

    async def run(self) -> None:
        while True:
            await trio.sleep(self.period)
            self.sweep()


def _peer(stream: trio.SocketStream) -> tuple[str, int]:
    address = stream.socket.getpeername()
    return (str(address[0]), int(address[1]))


class _HandshakeWithoutExtensions(ws_stream.Handshake):
    """A WebSocket handshake that declines every extension (permessage-deflate).

    Compressing a fan-out costs one deflate per message per client, and each
    compressing connection keeps its own zlib state (over 100 KB): for small
    JSON frames to thousands of clients the saving in bytes is not worth it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extensions = None


def set_compression(enabled: bool) -> None:
    """Whether WebSocket handshakes accept permessage-deflate (hypercorn always would)."""
    ws_stream.Handshake = _ORIGINAL_HANDSHAKE if enabled else _HandshakeWithoutExtensions  # type: ignore[misc]


_ORIGINAL_HANDSHAKE = ws_stream.Handshake


async def serve(
    app: Any,
    *,
    host: str,
    port: int,
    guard: ConnectionGuard,
    max_message_bytes: int,
    compression: bool = False,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on host:port until ``shutdown_trigger`` returns.

    The same life cycle as ``hypercorn.trio.serve`` (ASGI lifespan, graceful
    timeout on shutdown), with each accepted socket wrapped for ``guard``.
    ``task_status.started`` receives the bound (host, port) pairs, so a
    caller that asked for port 0 learns the real one.
    """
    set_compression(compression)
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_ping_interval = None  # the guard pings (see the module doc)
    config.websocket_max_message_size = max_message_bytes
    config.graceful_timeout = 5.0
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)

    async def handle(stream: trio.SocketStream) -> None:
        guarded = guard.wrap(stream)
        server = TCPServer(wrapped, config, context, ConnectionState(lifespan_state.copy()), guarded)  # type: ignore[arg-type]
        guard.streams[guarded] = server
        try:
            await server.run()
        finally:
            guard.release(guarded)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        # The guard outlives the accept loop: during the graceful timeout a
        # shielded send can still be stuck, and only the guard can cut it.
        lifespan_nursery.start_soon(guard.run)
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = [l.socket.getsockname()[:2] for l in listeners]
        async with trio.open_nursery() as server_nursery:
            async with trio.open_nursery() as accept_nursery:
                accept_nursery.start_soon(
                    partial(trio.serve_listeners, handle, listeners, handler_nursery=server_nursery)
                )
                task_status.started(bound)
                await shutdown_trigger()
                accept_nursery.cancel_scope.cancel()
            # No new connections; give open ones the graceful timeout to finish.
            await context.terminated.set()
            guard.close_idle_keep_alives()
            server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
