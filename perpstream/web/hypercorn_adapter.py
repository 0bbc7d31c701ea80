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
- The handshake's completion seen in h11's state, not by spotting
  ``HTTP/1.1 101`` in outgoing bytes: h11 switches protocol as it renders
  the 101, and the write that follows is the 101; once it is done the
  stream is marked upgraded and frames may follow.
- Compression declined per connection (the handshake's extension offer is
  dropped) rather than by replacing hypercorn's handshake class for the
  whole process.
- A WebSocket that breaks the protocol (RFC 6455 §7.1.7) is told why: wsproto
  reports the failure (1002, or 1007 for bad UTF-8) but hypercorn drops the
  socket without the close frame; the adapter sends it first.
- Requests RFC 9112 and RFC 6455 say to refuse get a ``400`` that hypercorn
  would not give: both ``Content-Length`` and ``Transfer-Encoding`` (§6.1, a
  smuggling attempt: refused and closed), and a ``Sec-WebSocket-Key`` that is
  not 16 bytes in base64 (§4.2.1).
- A refused handshake ends the connection. Hypercorn answers a bad
  upgrade (wrong version, bytes sent before the ``101``) with
  ``400`` and ``connection: close`` but leaves the socket open; and if
  the application accepts after that answer went out, hypercorn raised
  h11's ``LocalProtocolError`` out of the connection and, through the
  server's nursery, took the whole daemon down. The accept is now dropped
  (the application's later sends too, as hypercorn drops sends after a
  close) and the socket is closed once the answer is written.
- One answer per upgrade request. Hypercorn answers bytes that come before
  the 101 from its reading task, the application answers from its own;
  once the application runs, early bytes are only noted
  (:meth:`ConnectionServer._hold_early_bytes`) and its accept becomes a 400.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from importlib.metadata import version
from typing import Any

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, Data, EndBody, Response
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol, H11WSConnection
from hypercorn.protocol.ws_stream import ASGIWebsocketState, Handshake, WSStream
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from wsproto import Connection as WebSocketProtocol
from wsproto import ConnectionState as WebSocketState
from wsproto.events import CloseConnection, Event as WebSocketEvent

from perpstream.web.stream import GuardedStream

__all__ = [
    "BoundPeer", "ConnectionServer", "InternalsChanged", "Worker", "check_internals", "stream_of",
]

#: What this module uses of hypercorn that is not its public API: for each
#: class, the attributes it reads or the parameters it passes, by name.
REQUIRED: dict[type, tuple[str, ...]] = {
    TCPServer: ("__init__(app, config, context, state, stream)", "run()", "protocol_send(event)", "_read_data()"),
    ProtocolWrapper: ("__init__(app, config, context, task_group, state, ssl, client, server, send, alpn_protocol)",),
    H11Protocol: ("__init__(app, config, context, task_group, connection_state, ssl, client, server, send)",),
    H11WSConnection: ("__init__(h11_connection)",),
    WSStream: ("__init__(app, config, context, task_group, ssl, client, server, send, stream_id)",
               "_accept(message)", "_handle_events()", "handle(event)"),
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
    "WSStream": ("state", "handshake", "closed", "connection", "send", "stream_id"),
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
        self._early_bytes = False  # bytes came before the 101, while the app was answering
        #: The application's WebSocket handler, cancelled when hypercorn ends the
        #: handshake without telling it (hypercorn sends no disconnect after its own 400).
        self._app_scope = trio.CancelScope()
        #: Set once a refusal of the handshake has gone out whole, or the connection ended.
        self._refusal_sent = trio.Event()

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
        """The upgrade request has had (or is having) an answer that is not a ``101``."""
        protocol = self._h11()
        if protocol is None or not isinstance(protocol.connection, H11WSConnection):
            return False
        return protocol.connection.h11_connection.our_state not in (h11.SEND_RESPONSE, h11.SWITCHED_PROTOCOL)

    # ------------------------------------------------------------ hooks

    async def protocol_send(self, event: Any) -> None:
        protocol = self._h11()
        state = (protocol.connection.h11_connection.our_state
                 if protocol is not None and isinstance(protocol.connection, H11WSConnection) else None)
        if state is h11.SWITCHED_PROTOCOL and not self.guarded.upgraded and isinstance(event, RawData):
            # h11 switched when it rendered the 101, and hypercorn sends those
            # bytes next: this write is the 101. Frames may follow it.
            self.guarded.expect_upgrade()
        await super().protocol_send(event)
        if state in (h11.DONE, h11.MUST_CLOSE, h11.ERROR):
            # A whole non-101 answer to an upgrade went out ("connection: close"): keep the
            # promise, and end the handler hypercorn will never send a disconnect to.
            self.guarded.close_after_writes()
            self._app_scope.cancel()
            self._refusal_sent.set()

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            self._refusal_sent.set()  # the connection is over: nothing is coming any more

    async def _serve_app(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                         send: Callable[[Any], Awaitable[None]], sync_spawn: Callable[..., Any],
                         call_soon: Callable[..., Any]) -> None:
        """The ASGI app for this connection: the worker's, with the stream bound in."""
        if scope.get("client") is not None:
            scope["client"] = BoundPeer(scope["client"], self.guarded)
        scope.setdefault("extensions", {})["perpstream.stream"] = self.guarded
        headers = {name.lower() for name, _ in scope.get("headers", ())}
        if scope["type"] == "http":
            if b"content-length" in headers and b"transfer-encoding" in headers:
                await _refuse_http(send, "Content-Length and Transfer-Encoding together")
                return
            await self.worker.app(scope, receive, send)
        elif scope["type"] == "websocket":
            try:
                if self._handshake_answered():
                    pass  # hypercorn refused it already (bytes came before the 101): nothing to serve
                elif not _valid_key(scope.get("headers", ())):
                    self._refused = True
                    await self._refuse_handshake("Sec-WebSocket-Key must be 16 bytes in base64")
                else:
                    self._hold_early_bytes()
                    with self._app_scope:
                        await self.worker.app(scope, receive, partial(self._send_websocket, send))
            finally:
                if self._refused or self._handshake_answered():
                    # Return only once the refusal is out whole: hypercorn answers an app that
                    # ends mid-handshake with a 500, which h11 cannot send after a 400 began.
                    with trio.CancelScope(shield=True):
                        await self._refusal_sent.wait()
        else:
            await self.worker.app(scope, receive, send)

    async def _refuse_handshake(self, why: str) -> None:
        """Answer the upgrade request with a 400, as hypercorn answers one it finds invalid.

        The stream is marked closed first, in the same step as the check that
        nothing was answered yet: hypercorn then ignores bytes that arrive
        before the 101 instead of starting a 400 of its own in the middle of
        this one (two answers to one request break h11).
        """
        ws = self.websocket()
        assert ws is not None
        ws.closed = True
        body = f"bad WebSocket handshake: {why}".encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        await ws.send(Response(stream_id=ws.stream_id, status_code=400, headers=headers))
        await ws.send(Body(stream_id=ws.stream_id, data=body))
        await ws.send(EndBody(stream_id=ws.stream_id))

    async def _send_websocket(self, send: Callable[[Any], Awaitable[None]], message: Any) -> None:
        """What the application sends on a WebSocket, on its way to hypercorn."""
        if self._refused:
            return  # as hypercorn drops what an app sends after a close
        ws = self.websocket()
        answering = ws is not None and ws.state is ASGIWebsocketState.HANDSHAKE
        if answering and self._handshake_answered():
            # Hypercorn answered already (bytes came before the 101): the app's answer cannot follow.
            self._refused = True
            self._app_scope.cancel()
            return
        if message["type"] != "websocket.accept" or ws is None:
            await send(message)
            return
        if self._early_bytes:
            self._refused = True
            with trio.CancelScope(shield=True):
                await self._refuse_handshake("bytes sent before the 101 (RFC 6455 section 4.1)")
            return
        protocol = self._h11()
        if protocol is not None and isinstance(protocol.connection, H11WSConnection):
            # An HTTP/1.1 upgrade: the socket is ours (HTTP/2 WebSockets stay hypercorn's).
            if not self.worker.compression:
                ws.handshake.extensions = None
            _report_failures(ws.handshake, self.guarded)
        await send(message)

    def _hold_early_bytes(self) -> None:
        """Keep hypercorn from answering bytes that come before the 101 while the app answers.

        Hypercorn answers such bytes with a 400 from the reading task while
        the application may be answering the same request from its own (an
        accept, a 404): two answers to one request break h11. From the
        moment the application runs, early bytes are only noted here; the
        application's refusal goes out as it is, and its accept becomes a 400.
        """
        ws = self.websocket()
        if ws is None:
            return
        handle = ws.handle

        async def handle_after_the_handshake(event: Any) -> None:
            if isinstance(event, (Body, Data)) and not ws.handshake.accepted:
                self._early_bytes = True
                return
            await handle(event)

        ws.handle = handle_after_the_handshake  # type: ignore[method-assign]

def _valid_key(headers: Any) -> bool:
    keys = [value for name, value in headers if name.lower() == b"sec-websocket-key"]
    if len(keys) != 1:
        return False
    try:
        return len(base64.b64decode(keys[0].strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


async def _refuse_http(send: Callable[[Any], Awaitable[None]], why: str) -> None:
    body = f"bad request: {why}".encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _report_failures(handshake: Handshake, stream: GuardedStream) -> None:
    """Have the WebSocket connection this handshake makes send the close frames wsproto asks for.

    Done on the handshake, before the 101 is written: a frame read right
    after it already meets the wrapped connection.
    """
    accept = handshake.accept

    def accept_reporting(subprotocol: str | None, additional_headers: Any) -> Any:
        status, headers, connection = accept(subprotocol, additional_headers)
        return status, headers, _ClosingWithReason(connection, stream)

    handshake.accept = accept_reporting  # type: ignore[method-assign]


class _ClosingWithReason:
    """A wsproto connection that sends the close frame for a failure it reports.

    wsproto turns a protocol violation into a ``CloseConnection`` event with
    the code to send (1002, 1007) while its state is still open; hypercorn
    takes it for the peer's close and drops the socket without answering.
    This sends that close frame (committed to the stream, it goes out
    before the FIN) so the peer learns why.
    """

    def __init__(self, connection: WebSocketProtocol, stream: GuardedStream) -> None:
        self._connection = connection
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def send(self, event: WebSocketEvent) -> bytes:
        data = self._connection.send(event)
        if isinstance(event, CloseConnection):
            self._stream.closing()  # hypercorn's close: no fast-lane frame may follow it
        return data

    def events(self) -> Iterator[WebSocketEvent]:
        for event in self._connection.events():
            if isinstance(event, CloseConnection) and self._connection.state is WebSocketState.OPEN:
                self._stream.write_close(self._connection.send(CloseConnection(code=event.code)))
            yield event
