"""Provoke and record every message type the daemon sends, on real sockets.

Used by the AsyncAPI test (every captured message must match the document)
and runnable on its own to refresh the examples in docs/websocket.md:

    python -m tests.clients.capture [SECONDS] > messages.json

It runs the stormy demo daemon in-process and, concurrently: subscribes to
every stream on the multiplexed endpoint and on the single-stream paths,
follows every demo account that opens a position, sends each kind of bad
request, restarts a market and a session through /debug (``resync``),
floods a connection that does not read (``slow_consumer``), subscribes
once too often (4429), sends malformed frames until cut (1008), and keeps
one connection open across the shutdown (``goodbye`` + 1001).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url

from tests.clients.live import connect, stormy_config
from tests.e2e.daemon import Daemon, running_daemon

MARKETS = ("btc-usdc-perp", "eth-usdc-perp", "sol-usdc-perp")
# Addresses nobody trades from: subscribing to them starts empty sessions.
IDLE_ADDRESSES = tuple("0x" + f"{n:040x}" for n in range(1, 11))


@attrs.define
class Capture:
    """Messages by the endpoint they arrived on, and how connections were closed."""

    messages: list[tuple[str, dict[str, Any]]] = attrs.field(factory=list)
    closes: dict[str, tuple[int, str]] = attrs.field(factory=dict)

    def record(self, endpoint: str, message: dict[str, Any]) -> None:
        self.messages.append((endpoint, message))

    def by_type(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for _, message in self.messages:
            grouped[message["type"]].append(message)
        return dict(grouped)

    async def read(self, endpoint: str, ws: WebSocketConnection, scenario: str | None = None) -> None:
        """Record everything ``ws`` receives until it closes (then note the close) or we are cancelled."""
        try:
            while True:
                self.record(endpoint, json.loads(await ws.get_message()))
        except ConnectionClosed as closed:
            if scenario is not None and closed.reason is not None:
                self.closes[scenario] = (closed.reason.code, closed.reason.reason or "")


async def _send_all(ws: WebSocketConnection, *requests: dict[str, Any] | str | bytes) -> None:
    for request in requests:
        await ws.send_message(request if isinstance(request, (str, bytes)) else json.dumps(request))


def _subscribe(channel: str, request_id: object, **key: str) -> dict[str, Any]:
    return {"op": "subscribe", "channel": channel, "id": request_id, **key}


async def _multiplexed(daemon: Daemon, capture: Capture) -> None:
    """Every stream, acks, pongs and each kind of refused request on /api/v1/ws."""
    async with connect(daemon.ws("/api/v1/ws")) as ws:
        await _send_all(
            ws,
            _subscribe("prices", 1, market_id="BTC-USDC-PERP"),
            *(_subscribe("market_stats", n, market_id=m) for n, m in enumerate(MARKETS, 2)),
            _subscribe("liquidations", "liq"),
            {"op": "ping", "id": 5},
            {"op": "hello", "id": 6},
            _subscribe("prices", 7, market_id="btc-usdc-perp"),
            {"op": "unsubscribe", "channel": "market_stats", "market_id": "eth-usdc-perp", "id": 8},
            {"op": "unsubscribe", "channel": "market_stats", "market_id": "eth-usdc-perp", "id": 9},
            _subscribe("positions", 10, user_address="0x1234"),
            _subscribe("candles", 11, market_id="btc-usdc-perp"),
            _subscribe("prices", 12),
            _subscribe("prices", 13, market_id="doge-usdc-perp"),
        )
        await capture.read("multiplexed", ws)


async def _accounts(daemon: Daemon, http: httpx.AsyncClient, capture: Capture) -> None:
    """Follow every demo account that opens a position; restart one session (``resync``)."""
    async with connect(daemon.ws("/api/v1/ws")) as ws, trio.open_nursery() as nursery:
        nursery.start_soon(capture.read, "multiplexed", ws)
        followed: list[str] = []
        restarted = False
        while True:
            for position in (await http.get("/api/v1/positions?limit=1000")).json()["positions"]:
                address = position["user_address"]
                if address not in followed and len(followed) < 15:
                    followed.append(address)
                    await ws.send_message(json.dumps(_subscribe("positions", address, user_address=address)))
            if not restarted and len(followed) >= 2:
                await trio.sleep(1.0)  # let its session publish first
                response = await http.post(f"/debug/actors/sessions/{followed[0]}/restart")
                restarted = response.status_code == 202
            await trio.sleep(0.3)


async def _single_paths(daemon: Daemon, http: httpx.AsyncClient, capture: Capture) -> None:
    """The four single-stream paths; a ping and an unsupported op on one of them."""
    account = ""
    with trio.fail_after(20):
        while not account:
            positions = (await http.get("/api/v1/positions")).json()["positions"]
            account = positions[0]["user_address"] if positions else ""
            await trio.sleep(0.2)
    paths = {
        "prices": "/api/v1/ws/prices/btc-usdc-perp",
        "market_stats": "/api/v1/ws/market-stats/sol-usdc-perp",
        "liquidations": "/api/v1/ws/liquidations",
        "positions": f"/api/v1/ws/positions/{account.lower()}",
    }
    async with trio.open_nursery() as nursery:
        for endpoint, path in paths.items():
            nursery.start_soon(_follow, daemon, endpoint, path, capture)


async def _follow(daemon: Daemon, endpoint: str, path: str, capture: Capture) -> None:
    async with connect(daemon.ws(path)) as ws:
        if endpoint == "prices":
            await _send_all(ws, {"op": "ping", "id": "single"}, _subscribe("prices", 1, market_id="sol-usdc-perp"))
        await capture.read(endpoint, ws)


async def _refused(daemon: Daemon, capture: Capture) -> None:
    """Bad path parameters: ``error``, then close 4404 / 4400."""
    for endpoint, path in [
        ("prices", "/api/v1/ws/prices/doge-usdc-perp"),
        ("positions", "/api/v1/ws/positions/0x1234"),
    ]:
        async with connect(daemon.ws(path)) as ws:
            await capture.read(endpoint, ws, scenario=path)


async def _malformed(daemon: Daemon, capture: Capture) -> None:
    """Three malformed frames: three ``error``s, ``goodbye``, close 1008."""
    async with connect(daemon.ws("/api/v1/ws")) as ws:
        await _send_all(ws, "{oops", b"\x00\x01", "[]")
        await capture.read("multiplexed", ws, scenario="malformed")


async def _too_many_subscriptions(daemon: Daemon, capture: Capture) -> None:
    """One subscription over ``ws.max_subscriptions_per_connection`` (16): ``goodbye``, close 4429."""
    requests = [_subscribe("prices", f"p{m}", market_id=m) for m in MARKETS]
    requests += [_subscribe("market_stats", f"s{m}", market_id=m) for m in MARKETS]
    requests += [_subscribe("liquidations", "l")]
    requests += [_subscribe("positions", a, user_address=a) for a in IDLE_ADDRESSES]
    async with connect(daemon.ws("/api/v1/ws")) as ws:
        await _send_all(ws, *requests)
        await capture.read("multiplexed", ws, scenario="too_many_subscriptions")


async def _slow_consumer(daemon: Daemon, capture: Capture) -> None:
    """Pings with 60 KB ids, none of the replies read: the reply queue overflows (1013).

    trio-websocket holds one received message and stops reading the socket
    until it is taken, so not calling ``get_message`` really stops reading.
    """
    async with connect(daemon.ws("/api/v1/ws")) as ws:
        padding = "x" * 60_000
        for n in range(400):
            await ws.send_message(json.dumps({"op": "ping", "id": f"{n}:{padding}"}))
        await trio.sleep(0.5)
        await capture.read("multiplexed", ws, scenario="slow_consumer")


async def _restart_market(http: httpx.AsyncClient) -> None:
    """A market actor restarted: its price and stats subscribers get ``resync``."""
    await trio.sleep(2.5)
    response = await http.post("/debug/actors/markets/btc-usdc-perp/restart")
    assert response.status_code == 202, response.text


async def capture_all(
    data_dir: Path,
    *,
    enough: Callable[[Capture], bool] = lambda _: False,
    min_seconds: float = 4.0,
    max_seconds: float = 7.0,
) -> Capture:
    """Run the stormy daemon, provoke every message type, then shut it down.

    Provokes for ``max_seconds``, or less: once ``min_seconds`` have passed
    (every scenario has run its course) and the capture is ``enough``. The
    demo trades at random on a chain that mines in real time, so how long a
    given event takes varies with the machine's load: a caller bounds the
    wait generously and stops on what it needs, not on a fixed duration.
    """
    capture = Capture()
    async with trio.open_nursery() as outer:
        async with running_daemon(stormy_config(data_dir)) as daemon:
            # Opened outside the daemon's lifetime, so it sees the shutdown.
            witness = await connect_websocket_url(outer, daemon.ws("/api/v1/ws/prices/eth-usdc-perp"))
            outer.start_soon(capture.read, "prices", witness, "shutdown")
            async with httpx.AsyncClient(base_url=daemon.http) as http:
                scenarios: list[Callable[[], Awaitable[None]]] = [
                    lambda: _multiplexed(daemon, capture),
                    lambda: _accounts(daemon, http, capture),
                    lambda: _single_paths(daemon, http, capture),
                    lambda: _refused(daemon, capture),
                    lambda: _malformed(daemon, capture),
                    lambda: _too_many_subscriptions(daemon, capture),
                    lambda: _slow_consumer(daemon, capture),
                    lambda: _restart_market(http),
                ]
                with trio.move_on_after(max_seconds):
                    async with trio.open_nursery() as nursery:
                        for scenario in scenarios:
                            nursery.start_soon(scenario)
                        await trio.sleep(min_seconds)
                        while not enough(capture):
                            await trio.sleep(0.2)
                        nursery.cancel_scope.cancel()
        with trio.fail_after(10):
            while "shutdown" not in capture.closes:
                await trio.sleep(0.05)
    return capture


def main() -> None:
    """Print one captured example of every message type, as JSON."""
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 7.0
    with tempfile.TemporaryDirectory() as data_dir:
        capture = trio.run(partial(capture_all, Path(data_dir), min_seconds=seconds, max_seconds=seconds))
    examples: dict[str, Any] = {}
    for kind, messages in sorted(capture.by_type().items()):
        examples[kind] = messages[:3] if kind in ("error", "goodbye", "resync") else messages[:1]
    examples["closes"] = capture.closes
    json.dump(examples, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
