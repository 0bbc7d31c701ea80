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

Nothing that goes wrong inside one connection leaves it: whatever its
protocol handling raises (hypercorn and h11 have let errors out for
bytes a client sent too early) is logged once with the peer at WARNING,
counted in :attr:`ConnectionGuard.protocol_errors`, and that connection is
reset; the server and every other connection carry on. What is used of
hypercorn beyond its public API lives in
:mod:`perpstream.web.hypercorn_adapter`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from perpstream.web import hypercorn_adapter
from perpstream.web.hypercorn_adapter import ConnectionServer, Worker
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
        #: Every open stream, with hypercorn's server of its connection once it has one.
        self.streams: dict[GuardedStream, ConnectionServer | None] = {}
        self.cut_slow = 0
        self.cut_idle = 0
        self.pings_sent = 0
        #: Connections dropped because their protocol handling failed (a counter).
        self.protocol_errors = 0
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
        return guarded

    def release(self, stream: GuardedStream) -> None:
        """Forget a closed stream: one dict removal, whatever the number of connections."""
        self.streams.pop(stream, None)

    @staticmethod
    def stream_of(client: Any) -> GuardedStream | None:
        """The stream of the connection whose ASGI scope has this ``client``, once it is a WebSocket."""
        return hypercorn_adapter.stream_of(client)

    def contain(self, stream: GuardedStream, peer: str, failure: BaseException) -> None:
        """A connection's protocol handling failed: log it once, count it, reset that connection."""
        self.protocol_errors += 1
        log.warning("dropped the connection of %s: its protocol handling failed (%s)",
                    peer, "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(failure)))
        log.debug("the failure in the connection of %s", peer, exc_info=failure)
        stream.cut("protocol handling failed")

    def close_idle_keep_alives(self) -> int:
        """At shutdown: close HTTP connections waiting for their next request.

        Hypercorn would otherwise hold them until its graceful timeout; a
        browser always keeps one after a fetch. Connections with a request or
        a WebSocket in progress are left to finish.
        """
        closed = 0
        for stream, server in list(self.streams.items()):
            if server is not None and server.waiting_for_request:
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

    def _ping(self, stream: GuardedStream, server: ConnectionServer | None, next_due: float) -> None:
        """Ping an open WebSocket, between whole frames.

        The stream's fast lane keeps the ping between whole frames without
        waiting; a connection busy sending (the send timeout watches it), or
        not yet upgraded (no ping may go out ahead of the 101), is tried
        again on the next sweep.
        """
        if server is None or not server.websocket_open or stream.busy:
            return
        if stream.try_write(PING_FRAME):
            stream.ping_due = next_due
            self.pings_sent += 1

    async def run(self) -> None:
        while True:
            await trio.sleep(self.period)
            self.sweep()


def _leaves(failure: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or the exception itself."""
    if isinstance(failure, BaseExceptionGroup):
        return [leaf for inner in failure.exceptions for leaf in _leaves(inner)]
    return [failure]


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "a peer already gone"
    return f"{host}:{port}"


async def _shared_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listeners on host:port that other processes may bind too (``SO_REUSEPORT``)."""
    listeners = []
    for family, kind, proto, _, address in await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                         flags=socket.AI_PASSIVE):
        sock = trio.socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        listeners.append(trio.SocketListener(sock))
    return listeners


async def serve(
    app: Any,
    *,
    host: str,
    port: int,
    guard: ConnectionGuard,
    max_message_bytes: int,
    compression: bool = False,
    reuse_port: bool = False,
    shutdown_trigger: Callable[[], Awaitable[None]],
    drain: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on host:port until ``shutdown_trigger`` returns.

    Then the listeners close at once — a client reconnecting while the open
    connections are told goodbye is refused (and retries elsewhere, or on
    the next start) instead of being taken on by a server about to cut it
    — and ``drain`` runs before the graceful timeout starts.

    The same life cycle as ``hypercorn.trio.serve`` (ASGI lifespan, graceful
    timeout on shutdown), with each accepted socket wrapped for ``guard``.
    ``compression``: whether WebSocket handshakes accept permessage-deflate.
    Compressing a fan-out costs one deflate per message per client, and each
    compressing connection keeps its own zlib state (over 100 KB): for small
    JSON frames to thousands of clients the saving in bytes is not worth it.
    ``task_status.started`` receives the bound (host, port) pairs, so a
    caller that asked for port 0 learns the real one. ``reuse_port``: bind
    with ``SO_REUSEPORT``, so several processes share the port and the
    kernel spreads new connections across them (``--workers``).
    """
    worker = Worker(app, max_message_bytes=max_message_bytes, compression=compression)

    async def handle(stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        guarded = guard.wrap(stream)
        server = worker.connection(guarded)
        guard.streams[guarded] = server
        try:
            await server.run()
        except* Exception as failure:
            guard.contain(guarded, peer, failure)
        finally:
            guard.release(guarded)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(worker.lifespan.handle_lifespan)
        await worker.lifespan.wait_for_startup()
        # The guard outlives the accept loop: during the graceful timeout a
        # shielded send can still be stuck, and only the guard can cut it.
        lifespan_nursery.start_soon(guard.run)
        if reuse_port:
            listeners = await _shared_listeners(host, port)
        else:
            listeners = await trio.open_tcp_listeners(port, host=host)
        bound = [listener.socket.getsockname()[:2] for listener in listeners]
        async with trio.open_nursery() as server_nursery:
            async with trio.open_nursery() as accept_nursery:
                accept_nursery.start_soon(
                    partial(trio.serve_listeners, handle, listeners, handler_nursery=server_nursery)
                )
                task_status.started(bound)
                await shutdown_trigger()
                accept_nursery.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            if drain is not None:
                await drain()
            # No new connections; give open ones the graceful timeout to finish.
            await worker.terminate()
            guard.close_idle_keep_alives()
            server_nursery.cancel_scope.deadline = trio.current_time() + worker.graceful_timeout
        await worker.lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
