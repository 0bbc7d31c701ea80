"""A Hermes look-alike on a real loopback socket that behaves as the real server does.

Modelled on Hermes's own source (``apps/hermes/server/src/api/rest/v2/sse.rs``,
``api/rest.rs``, ``api/types.rs``) and axum's SSE framing:

- one event per slot (``slot_seconds``, 0.4 s as on Pythnet) carrying
  **every** requested feed at that slot, unchanged ones included, each
  ``data:`` + compact JSON + ``\\n\\n`` with no ``event:`` line;
  ``publish_time`` is whole seconds, so several events share one;
- a ``:`` keep-alive comment after ``keep_alive_s`` (15 s) without an event;
- ``inject_error`` sends ``event:error`` (``Error receiving update: Lagged(n)``)
  and the stream goes on; only after ``max_connection_s`` does it send
  ``Connection timeout reached (24h)`` and end the body;
- unknown ids answer ``404 text/plain`` ``Price ids not found: 0x…`` for the
  whole request unless ``ignore_invalid_price_ids=true``; ``delist`` removes a
  feed, and open streams silently leave it out from the next slot on;
- ``rate_limit`` (requests, window s, penalty s): past it every request gets
  429 with no ``Retry-After`` for the penalty, as Pyth's docs describe.

``up``/``down`` start and stop listening on a fixed port (while down,
connecting is refused and every open connection is cut). ``mode`` says what
the upstream does: ``live`` (prices every slot, the first event half a second
after a connection opens, so the gap fill from ``/latest`` comes first),
``stall`` (no events: only keep-alives), ``garbage`` (malformed events of
every kind with one well-formed old price, then keep-alives). ``replay``
serves prepared documents instead, one per slot in order, then keep-alives.
Prices are whole dollars; ``/latest`` answers the current slot's prices
(while not live: the newest it has sent).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from tests.feeds.hermes_shapes import KEEP_ALIVE, entry, error_event, payload, sse

from .loopback import LoopbackServer, read_request, respond

Mode = Literal["live", "stall", "garbage"]
STREAM = "/v2/updates/price/stream"
LATEST = "/v2/updates/price/latest"
TIMEOUT_MESSAGE = "Connection timeout reached (24h)"
_SCALE = 10**8  # expo -8
_FIRST_SLOT = 190_000_000


def garbage_events(feed_id: str) -> list[bytes]:
    """Everything a broken or hostile Hermes could send instead of prices."""
    return [
        b"data:{this is not json\n\n",
        sse('{"parsed": "not a list"}'),
        sse('["an", "array"]'),
        sse(payload(entry("00" * 32, 1, int(time.time())))),  # a feed nobody asked for
        sse(payload({"id": feed_id, "price": {"price": "NaN", "conf": "x", "expo": "-8", "publish_time": -1}})),
        sse("null"),
        sse("[" * 50_000),  # nested past the interpreter's recursion limit
        sse('{"parsed": [' + "9" * 5000 + "]}"),  # past Python's int-parsing digit limit
        b": a comment\n\nevent:weird\ndata:ignored\n\n",
        b"retry: not-a-number\n\n",
    ]


class _Request:
    """One parsed request: its path and its query, with repeated keys kept."""

    def __init__(self, target: str) -> None:
        url = urlsplit(target)
        self.path = url.path
        self.query = parse_qsl(url.query)

    def ids(self) -> list[str]:
        return [value.lower().removeprefix("0x") for key, value in self.query if key == "ids[]"]

    def flag(self, name: str) -> bool:
        return (name, "true") in self.query


class LoopbackHermes(LoopbackServer):
    def __init__(
        self,
        feed_id: str,
        *,
        price: int,
        others: Mapping[str, int] | None = None,
        slot_seconds: float = 0.4,
        keep_alive_s: float = 15.0,
        max_connection_s: float | None = None,
        rate_limit: tuple[int, float, float] | None = None,
        replay: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.feed_id = feed_id
        self.prices: dict[str, int] = {feed_id: price, **(others or {})}
        self.available: set[str] = set(self.prices)
        self.mode: Mode = "live"
        self.gap_fill_price: int | None = None
        self.old_price = price
        self.old_publish_time = 0
        self.slot_seconds = slot_seconds
        self.keep_alive_s = keep_alive_s
        self.max_connection_s = max_connection_s
        self.rate_limit = rate_limit
        self.replay = list(replay)
        self.replayed = 0  # documents of the replay sent so far (the slot clock of a replay)
        self.requests: list[tuple[float, str]] = []  # (trio time, path) of every request
        self.refused: list[tuple[float, int]] = []  # (trio time, status) of every refusal
        self.last_publish_time = 0
        self._slot = _FIRST_SLOT
        self._newest: dict[str, tuple[int, int, int]] = {}  # feed -> (price, publish_time, slot) last sent
        self._recent: deque[float] = deque()
        self._blocked_until = float("-inf")
        self._changed = trio.Event()
        self._errors: list[list[bytes]] = []  # one outbox per open stream

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def price(self) -> int:
        return self.prices[self.feed_id]

    @price.setter
    def price(self, value: int) -> None:
        self.prices[self.feed_id] = value

    def requested(self, path: str, *, since: float = 0.0) -> int:
        return sum(1 for at, p in self.requests if p == path and at >= since)

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        self._wake()

    def delist(self, feed_id: str) -> None:
        """Remove a feed, as Pyth does: new requests for it 404, open streams drop it."""
        self.available.discard(feed_id)

    def inject_error(self, message: str) -> None:
        """An ``event:error`` on every open stream; the streams go on after it."""
        for outbox in self._errors:
            outbox.append(error_event(message))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _document(self, ids: Sequence[str], *, latest: bool = False) -> str:
        """Every requested available feed at the current slot, as one document."""
        entries = []
        for feed_id in ids:
            if feed_id not in self.available:
                continue
            price = self.prices[feed_id]
            if latest and self.mode == "live" and feed_id == self.feed_id and self.gap_fill_price is not None:
                price = self.gap_fill_price
            if latest and self.mode != "live" and feed_id in self._newest:
                price, publish_time, slot = self._newest[feed_id]
            else:
                publish_time, slot = int(time.time()), self._slot
                self._sent(feed_id, price, publish_time, slot)
            entries.append(entry(feed_id, price * _SCALE, publish_time, slot=slot))
        return payload(*entries)

    def _sent(self, feed_id: str, price: int, publish_time: int, slot: int) -> None:
        self._newest[feed_id] = (price, publish_time, slot)
        if feed_id == self.feed_id:
            self.last_publish_time = max(self.last_publish_time, publish_time)

    def _limited(self) -> bool:
        """Pyth's documented limit: past ``requests`` in ``window`` s, 429 for ``penalty`` s."""
        if self.rate_limit is None:
            return False
        limit, window, penalty = self.rate_limit
        now = trio.current_time()
        if now < self._blocked_until:
            return True
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - window:
            self._recent.popleft()
        if len(self._recent) > limit:
            self._blocked_until = now + penalty
            self._recent.clear()
            return True
        return False

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            head = await read_request(stream, conn)
            if head is None:
                return
            request = _Request(head[0])
            self.requests.append((trio.current_time(), request.path))
            if request.path not in (LATEST, STREAM):
                await respond(stream, conn, 404, b"not found", "text/plain; charset=utf-8")
                return
            if self._limited():
                self.refused.append((trio.current_time(), 429))
                await respond(stream, conn, 429, b"Too Many Requests", "text/plain; charset=utf-8")
                return
            ids = request.ids()
            unknown = [feed_id for feed_id in ids if feed_id not in self.available]
            if unknown and not request.flag("ignore_invalid_price_ids"):
                self.refused.append((trio.current_time(), 404))
                body = "Price ids not found: " + ", ".join(f"0x{feed_id}" for feed_id in unknown)
                await respond(stream, conn, 404, body.encode(), "text/plain; charset=utf-8")
            elif request.path == LATEST:
                body = self.replay[max(0, self.replayed - 1)] if self.replay else self._document(ids, latest=True)
                await respond(stream, conn, 200, body.encode(), "application/json")
            else:
                await self._stream(stream, conn, ids)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the feed hung up: it does that after its timeouts
        finally:
            await stream.aclose()

    async def _stream(self, stream: trio.SocketStream, conn: h11.Connection, ids: list[str]) -> None:
        headers = [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
        ]
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
        outbox: list[bytes] = []
        self._errors.append(outbox)
        opened = last_event = trio.current_time()
        sent_garbage = False
        next_slot = opened + (0.5 if not self.replay else self.slot_seconds)

        async def send(data: bytes) -> None:
            nonlocal last_event
            await stream.send_all(conn.send(h11.Data(data=data)))
            last_event = trio.current_time()

        try:
            while True:
                while outbox:
                    await send(outbox.pop(0))
                now = trio.current_time()
                if self.max_connection_s is not None and now - opened >= self.max_connection_s:
                    await send(error_event(TIMEOUT_MESSAGE))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    return
                if self.mode == "garbage" and not sent_garbage:
                    sent_garbage = True
                    for junk in garbage_events(self.feed_id):
                        await send(junk)
                    self._sent(self.feed_id, self.old_price, self.old_publish_time, self._slot)
                    old = entry(self.feed_id, self.old_price * _SCALE, self.old_publish_time, slot=self._slot)
                    await send(sse(payload(old)))
                if now >= next_slot:
                    next_slot += self.slot_seconds
                    self._slot += 1
                    if self.replay and self.replayed < len(self.replay):
                        self.replayed += 1
                        await send(sse(self.replay[self.replayed - 1]))
                    elif not self.replay and self.mode == "live" and any(i in self.available for i in ids):
                        await send(sse(self._document(ids)))
                if trio.current_time() - last_event >= self.keep_alive_s:
                    await send(KEEP_ALIVE)
                wake = min(next_slot, last_event + self.keep_alive_s)
                if self.max_connection_s is not None:
                    wake = min(wake, opened + self.max_connection_s)
                with trio.move_on_at(wake):
                    await self._changed.wait()
        finally:
            self._errors.remove(outbox)
