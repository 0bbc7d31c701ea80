"""Clients that come and go at random, for the soak.

Each kind of client does what real ones do to a streaming server: read a
stream for a while and leave properly, juggle subscriptions, vanish without
a close, stall without reading, or send garbage. :class:`Churn` runs a
number of them concurrently, each picking its next behaviour from a seeded
random generator, until told to stop, and tallies what happened.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from .raw_ws import RawClient

MARKETS = ("btc-usdc-perp", "eth-usdc-perp", "sol-usdc-perp")
BEHAVIOUR_LIMIT_S = 20.0


@attrs.define
class Churn:
    port: int
    accounts: Sequence[str]
    seed: int
    outcomes: Counter[str] = attrs.Factory(Counter)
    _rng: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stream_path(self) -> str:
        kind = self._rng.choice(["prices", "market-stats", "positions", "liquidations"])
        if kind == "liquidations":
            return "/api/v1/ws/liquidations"
        if kind == "positions":
            return f"/api/v1/ws/positions/{self._rng.choice(self.accounts)}"
        return f"/api/v1/ws/{kind}/{self._rng.choice(MARKETS)}"

    async def run(self, workers: int, until: trio.Event) -> None:
        """``workers`` clients at a time; worker ``i`` starts as kind ``i`` (so every kind
        shows up whatever the luck), then each picks at random, readers most often."""
        behaviours: list[tuple[int, Callable[[], Awaitable[str]]]] = [
            (5, self.reader), (2, self.multiplexer), (2, self.vanisher), (1, self.staller), (1, self.garbage),
        ]
        async with trio.open_nursery() as nursery:
            for index in range(workers):
                nursery.start_soon(self._worker, behaviours, behaviours[index % len(behaviours)][1], until)

    async def _worker(self, behaviours: Sequence[tuple[int, Callable[[], Awaitable[str]]]],
                      first: Callable[[], Awaitable[str]], until: trio.Event) -> None:
        weights = [weight for weight, _ in behaviours]
        behaviour = first
        while not until.is_set():
            try:
                with trio.fail_after(BEHAVIOUR_LIMIT_S):  # none takes half as long; stuck is a finding
                    outcome = await behaviour()
            except (ConnectionClosed, HandshakeError, OSError, trio.TooSlowError) as exc:
                outcome = f"{behaviour.__name__}: {type(exc).__name__}"
            self.outcomes[outcome] += 1
            [(_, behaviour)] = self._rng.choices(behaviours, weights)

    async def reader(self) -> str:
        """Reads one stream for a while, then leaves with a close."""
        async with open_websocket_url(self.url(self.stream_path())) as ws:
            with trio.fail_after(10):
                first = json.loads(await ws.get_message())
                snapshot = json.loads(await ws.get_message())
            assert first["type"] == "connected" and snapshot["seq"] == 2, (first, snapshot)
            with trio.move_on_after(self._rng.uniform(0.2, 3.0)):
                while True:
                    await ws.get_message()
        return "reader: left"

    async def multiplexer(self) -> str:
        """Subscribes and unsubscribes at random on /api/v1/ws, pinging now and then."""
        async with open_websocket_url(self.url("/api/v1/ws")) as ws:
            for request_id in range(self._rng.randint(1, 12)):
                channel = self._rng.choice(["prices", "market_stats", "positions", "liquidations"])
                params = ({"market_id": self._rng.choice(MARKETS)} if channel in ("prices", "market_stats")
                          else {"user_address": self._rng.choice(self.accounts)} if channel == "positions" else {})
                op = self._rng.choice(["subscribe", "subscribe", "unsubscribe", "ping"])
                await ws.send_message(json.dumps({"op": op, "channel": channel, "id": request_id, **params}))
                with trio.move_on_after(self._rng.uniform(0.05, 0.5)):
                    while True:
                        await ws.get_message()
        return "multiplexer: left"

    async def vanisher(self) -> str:
        """Reads a little, then drops the TCP connection without a close frame (RST or FIN)."""
        client = await trio.to_thread.run_sync(RawClient.connect, self.port, self.stream_path())
        await trio.sleep(self._rng.uniform(0.1, 1.5))
        await trio.to_thread.run_sync(client.drain)
        if self._rng.random() < 0.5:
            client.abort()
            return "vanisher: reset"
        client.close()
        return "vanisher: closed without a close frame"

    async def staller(self) -> str:
        """Subscribes to a lot, asks for large answers, never reads; leaves or is cut."""
        client = await trio.to_thread.run_sync(
            lambda: RawClient.connect(self.port, "/api/v1/ws", receive_buffer=4096))
        for request_id, market in enumerate(MARKETS):
            client.send_text(json.dumps({"op": "subscribe", "channel": "prices", "market_id": market,
                                         "id": request_id}))
        big = json.dumps({"op": "ping", "id": "x" * 30_000})
        try:
            for _ in range(self._rng.randint(0, 40)):
                await trio.to_thread.run_sync(client.send_text, big)
        except OSError:
            client.close()
            return "staller: cut while sending"
        await trio.sleep(self._rng.uniform(0.5, 4.0))
        alive = await trio.to_thread.run_sync(client.drain)
        client.close()
        return "staller: gave up" if alive else "staller: cut"

    async def garbage(self) -> str:
        """Sends malformed frames until the server closes with 1008."""
        async with open_websocket_url(self.url(self._rng.choice(["/api/v1/ws", self.stream_path()]))) as ws:
            for junk in ("{nope", "[" * 20_000, "x" * 70_000):
                await ws.send_message(junk)
            with trio.fail_after(10):
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as closed:
                    return f"garbage: closed {closed.reason.code}"
