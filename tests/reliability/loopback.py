"""A minimal HTTP/1.1 request reader and writer for the loopback fault servers."""

from __future__ import annotations

from urllib.parse import urlsplit

import h11
import trio


async def read_request(stream: trio.SocketStream, conn: h11.Connection) -> tuple[str, bytes] | None:
    """The next request's path and body, or None once the peer is gone."""
    path = ""
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
            path = urlsplit(event.target.decode()).path
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return path, body
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def respond(
    stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes, content_type: str
) -> None:
    headers = [("content-type", content_type), ("content-length", str(len(body)))]
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))
