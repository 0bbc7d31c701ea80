"""Pieces for fault tests of the whole actor tree on trio's virtual clock.

Builds on the integration harness (``tests.integration.harness``): the same
tree, scripted feed and in-memory position store, plus what fault tests
need on top: a store that can be made to fail, and WebSocket clients (the
app's test client) that record every frame with its arrival time while the
test does other things.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from quart.testing.connections import WebsocketDisconnectError
from quart_trio import QuartTrio

from perpstream.chain.store import StoreSnapshot
from perpstream.services.store import MemoryPositionStore
from perpstream.web.health import walk_actors

ETH = "eth-usdc-perp"
ETH_FEED = "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace"


class FailingStore(MemoryPositionStore):
    """A position store whose reads fail for a while, as a broken disk would.

    ``fail_next[market_id] = n`` makes the next ``n`` snapshots of that
    market raise; then it reads normally again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fail_next: dict[str, int] = {}
        self.failures = 0

    def snapshot(self, market_id: str | None = None) -> StoreSnapshot:
        remaining = self.fail_next.get(market_id or "", 0)
        if remaining > 0:
            self.fail_next[market_id or ""] = remaining - 1
            self.failures += 1
            raise sqlite3.OperationalError("disk I/O error")
        return super().snapshot(market_id)


@attrs.define
class Received:
    message: dict[str, Any]
    at: float


@attrs.define
class Recorder:
    """Every frame one test-client WebSocket received, and how it ended."""

    path: str
    frames: list[Received] = attrs.Factory(list)
    closed_with: int | None = None
    _arrived: trio.Event = attrs.Factory(trio.Event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r.message for r in self.frames if r.message["type"] == kind]

    def times(self, kind: str) -> list[float]:
        return [r.at for r in self.frames if r.message["type"] == kind]

    def types(self) -> list[str]:
        return [r.message["type"] for r in self.frames]

    def seqs(self) -> list[int]:
        return [r.message["seq"] for r in self.frames]

    async def wait_for(self, kind: str, *, count: int = 1, timeout: float = 60.0) -> dict[str, Any]:
        """Block until ``count`` frames of ``kind`` have arrived; return the last."""
        with trio.fail_after(timeout):
            while len(self.of(kind)) < count:
                if self.closed_with is not None:
                    raise AssertionError(f"{self.path} closed ({self.closed_with}) before {count} {kind}")
                self._arrived = trio.Event()
                await self._arrived.wait()
        return self.of(kind)[count - 1]

    async def run(self, app: QuartTrio, stop: trio.Event) -> None:
        # The test client's connection must not be cancelled from outside: its
        # exit awaits before closing its own nursery. It ends when ``stop`` is set.
        with trio.CancelScope(shield=True):
            async with app.test_client().websocket(self.path) as ws:
                async with trio.open_nursery() as inner:
                    inner.start_soon(self._receive, ws)
                    await stop.wait()
                    inner.cancel_scope.cancel()

    async def _receive(self, ws: Any) -> None:
        while True:
            try:
                text = await ws.receive()
            except WebsocketDisconnectError as closed:
                self.closed_with = closed.args[0] if closed.args else None
                self._arrived.set()
                return
            self.frames.append(Received(json.loads(text), trio.current_time()))
            self._arrived.set()


@asynccontextmanager
async def recorders(app: QuartTrio, *paths: str) -> AsyncIterator[list[Recorder]]:
    """Clients on ``paths``, recording until the block ends, then disconnecting."""
    clients = [Recorder(path) for path in paths]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(client.run, app, stop)
        try:
            yield clients
        finally:
            stop.set()


def node(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    """One actor's node in a registry snapshot."""
    for found in walk_actors(snapshot.get("root")):
        if found["name"] == name:
            return found
    raise KeyError(name)


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in zip(times, times[1:])]
