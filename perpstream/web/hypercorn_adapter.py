"""Every reach into hypercorn's internals, in one place.

The server (:mod:`perpstream.web.server`) runs hypercorn's trio worker
piece by piece instead of calling ``hypercorn.trio.serve``, so that each
socket can be wrapped in a :class:`~perpstream.web.stream.GuardedStream`.
That needs classes hypercorn does not promise to keep: its per-connection
``TCPServer``, its lifespan and worker context, and a look inside a
connection (its h11 protocol, its WebSocket stream and that stream's
handshake). This module is the only one that imports them. The names and
signatures it relies on are listed in :data:`REQUIRED` and checked by
:func:`check_internals`, which the server calls before it listens and the
adapter's test calls too, so an upgrade that moves any of them stops the
daemon at start-up with the name of what moved, instead of silently
stopping pings or cuts. ``pyproject.toml`` pins the versions checked.

What a connection gets from the adapter, beyond hypercorn itself:

- Its guarded stream bound to it directly: the ASGI scope's ``client``
  is a :class:`BoundPeer`, the peer address that also carries the stream
  (and ``scope["extensions"]["perpstream.stream"]`` holds it), instead of
  a lookup by peer address.
- The handshake's completion seen through ASGI, not by spotting
  ``HTTP/1.1 101`` in outgoing bytes: the stream is marked upgraded once
  the ``websocket.accept`` message has been written.
- Compression declined per connection (the handshake's extension offer is
  dropped) rather than by replacing hypercorn's handshake class for the
  whole process.
- A refused handshake ends the connection. Hypercorn answers a bad
  upgrade (wrong version, bytes sent before the ``101``) with
  ``400`` and ``connection: close`` but leaves the socket open; and if
  the application accepts after that answer went out, hypercorn raised
  h11's ``LocalProtocolError`` out of the connection and, through the
  server's nursery, took the whole daemon down. The accept is now dropped
  (the application's later sends too, as hypercorn drops sends after a
  close) and the socket is closed once the answer is written.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import h11
from hypercorn.config import Config
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol, H11WSConnection
from hypercorn.protocol.ws_stream import ASGIWebsocketState, Handshake, WSStream
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from perpstream.web.stream import GuardedStream

__all__ = [
    "BoundPeer", "ConnectionServer", "InternalsChanged", "Worker", "check_internals", "stream_of",
]

#: What this module uses of hypercorn that is not its public API: for each
#: class, the attributes it reads or the parameters it passes, by name.
REQUIRED: dict[type, tuple[str, ...]] = {
    TCPServer: ("__init__(app, config, context, state, stream)", "run()", "protocol_send(event)"),
    ProtocolWrapper: ("__init__(app, config, context, task_group, state, ssl, client, server, send, alpn_protocol)",),
    H11Protocol: ("__init__(app, config, context, task_group, connection_state, ssl, client, server, send)",),
    H11WSConnection: ("__init__(h11_connection)",),
    WSStream: ("__init__(app, config, context, task_group, ssl, client, server, send, stream_id)",
               "_accept(message)"),
    Handshake: ("__init__(headers, http_version)", "accept(subprotocol, additional_headers)"),
    Lifespan: ("__init__(app, config, state)", "handle_lifespan(task_status)", "wait_for_startup()",
               "wait_for_shutdown()"),
    WorkerContext: ("__init__(max_requests)",),
}
#: Instance attributes, checked on live objects by the adapter's test (they
#: are set in ``__init__`` or ``run``, so a class cannot show them).
INSTANCE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "TCPServer": ("protocol",),
    "ProtocolWrapper": ("protocol",),
    "H11Protocol": ("stream", "connection"),
    "H11WSConnection": ("h11_connection",),
    "WSStream": ("state", "handshake", "closed"),
    "Handshake": ("extensions",),
    "WorkerContext": ("terminated",),
}
CONFIG_SETTINGS = ("accesslog", "errorlog", "websocket_ping_interval", "websocket_max_message_size",
                   "graceful_timeout", "wsgi_max_body_size")
#: The hypercorn these internals were read from (pinned in pyproject.toml).
TESTED_VERSION = "0.18.0"


class InternalsChanged(RuntimeError):
    """Hypercorn no longer has an internal the server relies on."""


def check_internals() -> None:
    """Raise :class:`InternalsChanged` naming every required internal that is gone or changed."""
    problems: list[str] = []
    for cls, members in REQUIRED.items():
        for member in members:
            name, _, params = member.partition("(")
            wanted = [p for p in params.rstrip(")").replace(" ", "").split(",") if p]
            function = getattr(cls, name, None)
            if function is None:
                problems.append(f"{cls.__qualname__}.{name} is gone")
                continue
            have = [p for p in inspect.signature(function).parameters if p not in ("self", "args", "kwargs")]
            if have[: len(wanted)] != wanted:
                problems.append(f"{cls.__qualname__}.{name} takes ({', '.join(have)}), not ({', '.join(wanted)})")
    config = Config()
    problems += [f"hypercorn.config.Config has no {name}" for name in CONFIG_SETTINGS if not hasattr(config, name)]
    if not hasattr(ASGIWebsocketState, "CONNECTED"):
        problems.append("ASGIWebsocketState.CONNECTED is gone")
    if problems:
        raise InternalsChanged(
            f"hypercorn {version('hypercorn')} (internals read from {TESTED_VERSION}) changed: "
            + "; ".join(problems)
        )


class BoundPeer(tuple):  # type: ignore[type-arg]
    """A connection's peer address (host, port) that also carries its guarded stream.

    It stands in the ASGI scope's ``client``, so a route that reads the
    client's address reads it as before, and one that needs the socket
    takes it from there: no table from addresses to streams to keep.
    """

    stream: GuardedStream

    def __new__(cls, address: tuple[str, int], stream: GuardedStream) -> BoundPeer:
        peer = super().__new__(cls, address)
        peer.stream = stream
        return peer


def stream_of(client: Any) -> GuardedStream | None:
    """The guarded stream of an ASGI scope's ``client``, once its WebSocket handshake is written."""
    stream = getattr(client, "stream", None)
    return stream if isinstance(stream, GuardedStream) and stream.upgraded else None


class Worker:
    """What hypercorn's trio worker holds for all its connections: config, app, lifespan, context."""

    def __init__(self, app: Any, *, max_message_bytes: int, compression: bool) -> None:
        check_internals()
        config = Config()
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.websocket_ping_interval = None  # the guard pings (see perpstream.web.server)
        config.websocket_max_message_size = max_message_bytes
        config.graceful_timeout = 5.0
        self.config = config
        self.compression = compression
        self.app = app
        self.wrapped = wrap_app(app, config.wsgi_max_body_size, None)
        self.lifespan_state: dict[str, Any] = {}
        self.lifespan = Lifespan(self.wrapped, config, self.lifespan_state)
        self.context = WorkerContext(None)

    @property
    def graceful_timeout(self) -> float:
        return float(self.config.graceful_timeout)

    async def terminate(self) -> None:
        """Tell every connection the worker is stopping (keep-alive connections then close)."""
        await self.context.terminated.set()

    def connection(self, stream: GuardedStream) -> ConnectionServer:
        return ConnectionServer(self, stream)


class ConnectionServer(TCPServer):
    """Hypercorn's server of one TCP connection, bound to its guarded stream."""

    def __init__(self, worker: Worker, stream: GuardedStream) -> None:
        super().__init__(self._serve_app, worker.config, worker.context,  # type: ignore[arg-type]
                         ConnectionState(worker.lifespan_state.copy()), stream)  # type: ignore[arg-type]
        self.worker = worker
        self.guarded = stream
        self._refused = False

    # ------------------------------------------------------------ a look inside

    def _h11(self) -> H11Protocol | None:
        protocol = getattr(getattr(self, "protocol", None), "protocol", None)
        return protocol if isinstance(protocol, H11Protocol) else None

    def websocket(self) -> WSStream | None:
        """The connection's WebSocket stream, if it has one."""
        protocol = self._h11()
        stream = None if protocol is None else protocol.stream
        return stream if isinstance(stream, WSStream) else None

    @property
    def websocket_open(self) -> bool:
        """A WebSocket whose handshake has been written and which is not closing."""
        ws = self.websocket()
        return ws is not None and ws.state is ASGIWebsocketState.CONNECTED and self.guarded.upgraded

    @property
    def waiting_for_request(self) -> bool:
        """An HTTP/1.1 keep-alive connection between requests."""
        protocol = self._h11()
        return protocol is not None and protocol.stream is None

    def _handshake_answered(self) -> bool:
        """The upgrade request has already had an answer that was not a ``101``."""
        protocol = self._h11()
        if protocol is None or not isinstance(protocol.connection, H11WSConnection):
            return False
        return protocol.connection.h11_connection.our_state is not h11.SEND_RESPONSE

    # ------------------------------------------------------------ hooks

    async def protocol_send(self, event: Any) -> None:
        await super().protocol_send(event)
        protocol = self._h11()
        if (protocol is not None and isinstance(protocol.connection, H11WSConnection)
                and protocol.connection.h11_connection.our_state in (h11.DONE, h11.MUST_CLOSE, h11.ERROR)):
            # A whole non-101 answer to an upgrade went out ("connection: close"): keep the promise.
            self.guarded.close_after_writes()

    async def _serve_app(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                         send: Callable[[Any], Awaitable[None]], sync_spawn: Callable[..., Any],
                         call_soon: Callable[..., Any]) -> None:
        """The ASGI app for this connection: the worker's, with the stream bound in."""
        if scope.get("client") is not None:
            scope["client"] = BoundPeer(scope["client"], self.guarded)
        scope.setdefault("extensions", {})["perpstream.stream"] = self.guarded
        if scope["type"] != "websocket":
            await self.worker.app(scope, receive, send)
            return

        async def send_websocket(message: Any) -> None:
            if self._refused:
                return  # as hypercorn drops what an app sends after a close
            if message["type"] == "websocket.accept":
                if self._handshake_answered():
                    self._refused = True
                    return
                ws = self.websocket()
                if ws is not None and not self.worker.compression:
                    ws.handshake.extensions = None
                await send(message)
                self.guarded.upgraded = True
                return
            await send(message)

        await self.worker.app(scope, receive, send_websocket)
