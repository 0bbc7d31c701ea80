"""HermesFeed against a small Hermes look-alike on a real loopback socket.

Real sockets, real HTTP/1.1 (chunked ``text/event-stream``, as axum serves
it), real time: what the virtual-time tests cannot show is that httpx on
trio really surfaces a connection cut mid-chunk, a clean end of stream and
partial reads the way the client expects.
"""

from __future__ import annotations

from functools import partial
from urllib.parse import parse_qsl, urlsplit

import trio

from perpstream.domain.prices import PriceUpdate
from perpstream.feeds import HermesConfig, HermesFeed

from .hermes_shapes import BTC, ETH, KEEP_ALIVE, SOL, entry, error_event, payload, sse


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class LoopbackHermes:
    """Three stream connections, each ending differently, and a ``/latest`` per connection."""

    def __init__(self) -> None:
        self.stream_connections = 0
        self.latest_requests = 0
        self.request_heads: list[tuple[str, list[tuple[str, str]], dict[str, str]]] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(65536)
            if not data:
                return
            head += data
        request_line, *header_lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
        _, target, _ = request_line.split(" ")
        url = urlsplit(target)
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
        self.request_heads.append((url.path, parse_qsl(url.query), headers))
        if url.path == "/v2/updates/price/latest":
            await self.serve_latest(stream)
        elif url.path == "/v2/updates/price/stream":
            await self.serve_stream(stream)
        await stream.aclose()

    async def serve_latest(self, stream: trio.SocketStream) -> None:
        self.latest_requests += 1
        body = [
            payload(entry(BTC, 6_500_000_000_000, 1000), entry(ETH, 340_000_000_000, 1000)),
            payload(entry(BTC, 6_500_200_000_000, 1002), entry(ETH, 340_100_000_000, 1001)),
            payload(entry(BTC, 6_500_300_000_000, 1003), entry(ETH, 340_400_000_000, 1004)),
        ][min(self.latest_requests, 3) - 1].encode()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    async def serve_stream(self, stream: trio.SocketStream) -> None:
        self.stream_connections += 1
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        if self.stream_connections == 1:
            # Every event carries every requested feed, changed or not, as Hermes's do.
            await stream.send_all(chunk(sse(payload(entry(BTC, 6_500_100_000_000, 1001), entry(ETH, 340_100_000_000, 1001)))))
            await stream.send_all(chunk(KEEP_ALIVE))
            cut = chunk(sse(payload(entry(BTC, 6_500_200_000_000, 1002), entry(ETH, 340_100_000_000, 1001))))
            await stream.send_all(cut[: len(cut) // 2])  # the connection dies mid-event
        elif self.stream_connections == 2:
            await stream.send_all(chunk(sse('{"parsed": [{"id": "nonsense"}')))
            unasked = payload(entry(SOL, 15_000_000_000, 1002), entry(BTC, 6_500_200_000_000, 1002))
            await stream.send_all(chunk(sse(unasked)))
            event = sse(payload(entry(BTC, 6_500_300_000_000, 1003), entry(ETH, 340_100_000_000, 1001)))
            await stream.send_all(chunk(event[:10]))  # one event split over two chunks
            await trio.sleep(0.01)
            await stream.send_all(chunk(event[10:]))
            await stream.send_all(chunk(error_event("Connection timeout reached (24h)")))
            await stream.send_all(b"0\r\n\r\n")  # then a clean end of the stream
        else:
            await stream.send_all(chunk(sse(payload(entry(BTC, 6_500_500_000_000, 1005), entry(ETH, 340_400_000_000, 1004)))))
            await trio.sleep_forever()


async def test_recovers_across_disconnects_errors_and_bad_events() -> None:
    server = LoopbackHermes()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        feed = HermesFeed(
            HermesConfig(
                feed_ids=(BTC, ETH),
                base_url=f"http://127.0.0.1:{port}",
                api_key="k3y",
                read_timeout=2.0,
                connect_timeout=2.0,
                backoff_initial=0.02,
                backoff_max=0.1,
                rng_seed=1,
            )
        )
        updates: list[PriceUpdate] = []
        eight = trio.Event()

        async def on_update(update: PriceUpdate) -> None:
            updates.append(update)
            if len(updates) == 8:
                eight.set()

        nursery.start_soon(feed.run, on_update)
        with trio.fail_after(4):
            await eight.wait()
        await trio.sleep(0.05)  # nothing further should arrive
        status = feed.status()
        nursery.cancel_scope.cancel()

    assert [(u.feed_id, u.publish_time, u.price.price) for u in updates] == [
        (BTC, 1000, 6_500_000_000_000),  # gap fill 1
        (ETH, 1000, 340_000_000_000),
        (BTC, 1001, 6_500_100_000_000),  # stream 1, then cut mid-event
        (ETH, 1001, 340_100_000_000),
        (BTC, 1002, 6_500_200_000_000),  # gap fill 2 brings the lost event; its ETH is a repeat
        (BTC, 1003, 6_500_300_000_000),  # stream 2: after a malformed event and one with an unasked feed
        (ETH, 1004, 340_400_000_000),  # gap fill 3 (its BTC is a repeat)
        (BTC, 1005, 6_500_500_000_000),  # stream 3
    ]
    assert server.stream_connections == 3 and server.latest_requests == 3
    assert status.connected and status.reconnects == 2 and status.missing_feeds == ()
    assert "Connection timeout reached (24h)" in (status.last_error or "")
    for _path, params, headers in server.request_heads:
        assert headers["authorization"] == "Bearer k3y"
        assert params[:3] == [("ids[]", BTC), ("ids[]", ETH), ("parsed", "true")]
