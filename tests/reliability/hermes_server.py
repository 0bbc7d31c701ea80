"""A Hermes look-alike on a real loopback socket that can fail on command.

``up``/``down`` start and stop listening on a fixed port (while down,
connecting is refused, and every open connection is cut, as when the
server goes away). On the stream path each connection behaves as ``mode``
says, and follows mode changes mid-stream:

- ``live``: one fresh price event (``publish_time`` = now) every 0.2 s,
  the first one a second after the connection opens, so the gap fill
  from ``/latest`` is what a client sees first;
- ``stall``: the connection stays open and goes silent;
- ``garbage``: malformed events of every kind, one well-formed but old
  price among them (``old_price`` at ``old_publish_time``), then silence.

``/v2/updates/price/latest`` answers, while live, ``gap_fill_price``
(default: ``price``) with ``publish_time`` = now; otherwise the newest price
it has sent, as a real Hermes whose publishers went quiet would. Prices are
whole dollars.
"""

from __future__ import annotations

import time
from typing import Literal

import h11
import trio

from tests.feeds.hermes_shapes import entry, payload, sse

from .loopback import LoopbackServer, read_request, respond

Mode = Literal["live", "stall", "garbage"]
STREAM = "/v2/updates/price/stream"
LATEST = "/v2/updates/price/latest"
_SCALE = 10**8  # expo -8


def garbage_events(feed_id: str) -> list[bytes]:
    """Everything a broken or hostile Hermes could send instead of prices."""
    return [
        b"data: {this is not json\n\n",
        sse('{"parsed": "not a list"}'),
        sse('["an", "array"]'),
        sse(payload(entry("00" * 32, 1, int(time.time())))),  # a feed nobody asked for
        sse(payload({"id": feed_id, "price": {"price": "NaN", "conf": "x", "expo": "-8", "publish_time": -1}})),
        sse("null"),
        sse("[" * 50_000),  # nested past the interpreter's recursion limit
        sse('{"parsed": [' + "9" * 5000 + "]}"),  # past Python's int-parsing digit limit
        b": a comment\n\nevent: weird\ndata: ignored\n\n",
        b"retry: not-a-number\n\n",
    ]


class LoopbackHermes(LoopbackServer):
    def __init__(self, feed_id: str, *, price: int) -> None:
        super().__init__()
        self.feed_id = feed_id
        self.mode: Mode = "live"
        self.price = price
        self.gap_fill_price: int | None = None
        self.old_price = price
        self.old_publish_time = 0
        self.requests: list[tuple[float, str]] = []  # (trio time, path)
        self.last_publish_time = 0
        self._newest: tuple[int, int] | None = None  # (price, publish_time) last sent
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requested(self, path: str, *, since: float = 0.0) -> int:
        return sum(1 for at, p in self.requests if p == path and at >= since)

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        self._changed.set()
        self._changed = trio.Event()

    def _entry_bytes(self, price: int, publish_time: int) -> bytes:
        if publish_time >= self.last_publish_time:
            self.last_publish_time = publish_time
            self._newest = (price, publish_time)
        return payload(entry(self.feed_id, price * _SCALE, publish_time)).encode()

    def _latest(self) -> bytes:
        if self.mode == "live" or self._newest is None:
            price = self.gap_fill_price if self.gap_fill_price is not None else self.price
            return self._entry_bytes(price, int(time.time()))
        return self._entry_bytes(*self._newest)

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            request = await read_request(stream, conn)
            if request is None:
                return
            path, _ = request
            self.requests.append((trio.current_time(), path))
            if path == LATEST:
                await respond(stream, conn, 200, self._latest(), "application/json")
            elif path == STREAM:
                await self._stream(stream, conn)
            else:
                await respond(stream, conn, 404, b"not found", "text/plain")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the feed hung up: it does that after its read timeout
        finally:
            await stream.aclose()

    async def _stream(self, stream: trio.SocketStream, conn: h11.Connection) -> None:
        headers = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
        sent_garbage = False
        first_live = True
        while True:
            if self.mode == "live":
                if first_live:
                    first_live = False
                    with trio.move_on_after(1.0):
                        await self._changed.wait()
                    continue
                event = sse(self._entry_bytes(self.price, int(time.time())).decode())
                await stream.send_all(conn.send(h11.Data(data=event)))
                with trio.move_on_after(0.2):
                    await self._changed.wait()
            elif self.mode == "garbage" and not sent_garbage:
                sent_garbage = True
                for junk in garbage_events(self.feed_id):
                    await stream.send_all(conn.send(h11.Data(data=junk)))
                old = sse(self._entry_bytes(self.old_price, self.old_publish_time).decode())
                await stream.send_all(conn.send(h11.Data(data=old)))
            else:
                await self._changed.wait()  # silent, connection open
