"""The loopback fault servers' common ground: a server that can go down and
come back on the same port, and a minimal HTTP/1.1 request reader and writer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h11
import trio

from tests.e2e.daemon import free_port


class LoopbackServer:
    """A server on a fixed loopback port that a test takes down and brings back.

    Subclasses serve each connection in :meth:`serve_connection`.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._scope: trio.CancelScope | None = None

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        raise NotImplementedError

    async def up(self, nursery: trio.Nursery) -> None:
        """Listen (again) on the port, in ``nursery``."""
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        scope = self._scope = trio.CancelScope()

        async def serve() -> None:
            with scope:
                await trio.serve_listeners(self.serve_connection, listeners)

        nursery.start_soon(serve)

    def down(self) -> None:
        """Stop listening and cut every open connection."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None


async def read_request(stream: trio.SocketStream, conn: h11.Connection) -> tuple[str, bytes] | None:
    """The next request's target (path and query) and body, or None once the peer is gone."""
    target = ""
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            target = event.target.decode()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return target, body
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def serve_requests(
    stream: trio.SocketStream,
    answer: Callable[[trio.SocketStream, h11.Connection, bytes], Awaitable[bool]],
) -> None:
    """Answer one keep-alive connection's requests, one at a time, until the peer
    leaves or ``answer`` (given each request's body) returns False: hang up."""
    conn = h11.Connection(h11.SERVER)
    try:
        while (request := await read_request(stream, conn)) is not None:
            if not await answer(stream, conn, request[1]):
                return
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await stream.aclose()


async def respond(
    stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes, content_type: str
) -> None:
    headers = [("content-type", content_type), ("content-length", str(len(body)))]
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))
