"""A client that resumes, as the protocol asks clients to: the test side of "nothing lost".

It remembers the last ``(epoch, offset)`` of each stream, reconnects with it
(``?epoch=&offset=`` on a single-stream path, ``since`` in subscribe on the
multiplexed one), and records every stream frame it is sent. It keeps no
de-duplication of its own: a frame at or below an offset already received
is recorded as a repeat, so a test can require there are none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.clients.live import connect

#: Message types that are snapshots (conflatable); every other stream frame is an event.
SNAPSHOTS = frozenset({"price_update", "positions_update", "liquidation_alert", "market_stats"})


def is_event(message: dict[str, Any]) -> bool:
    return "offset" in message and message["type"] not in SNAPSHOTS


def as_sent(message: dict[str, Any]) -> dict[str, Any]:
    """A frame without its per-subscription ``seq``: what every subscriber of the stream gets."""
    return {k: v for k, v in message.items() if k != "seq"}


@attrs.define
class ResumingClient:
    """Streams (name → single-stream path or multiplexed subscribe), resumed across connections."""

    base: str  # ws://host:port
    streams: dict[str, dict[str, Any]]  # stream name ("positions:0x..") → subscribe fields, or {"path": ...}
    positions: dict[str, tuple[str, int]] = attrs.Factory(dict)
    events: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)
    #: Every stream frame received (snapshots too), by stream and offset.
    frames: dict[str, dict[int, dict[str, Any]]] = attrs.Factory(dict)
    closes: list[int | None] = attrs.Factory(list)
    recovered: list[bool | None] = attrs.Factory(list)
    repeats: list[dict[str, Any]] = attrs.Factory(list)
    connections: int = 0
    _arrived: trio.Event = attrs.Factory(trio.Event)

    def _path(self) -> str:
        if len(self.streams) == 1:
            [(name, spec)] = self.streams.items()
            if "path" in spec:
                since = self.positions.get(name)
                return spec["path"] + ("" if since is None else f"?epoch={since[0]}&offset={since[1]}")
        return "/api/v1/ws"

    async def _subscribe(self, ws: WebSocketConnection) -> None:
        for n, (name, spec) in enumerate(self.streams.items()):
            if "path" in spec:
                continue
            request: dict[str, Any] = {"op": "subscribe", "id": n, **spec}
            if (since := self.positions.get(name)) is not None:
                request["since"] = {"epoch": since[0], "offset": since[1]}
            await ws.send_message(json.dumps(request))

    def _record(self, message: dict[str, Any]) -> None:
        if message["type"] == "connected":
            self.recovered.append(message.get("recovered"))
            return
        if "offset" not in message:
            return
        name = self._stream_of(message)
        last = self.positions.get(name)
        if last is not None and last[0] == message["epoch"] and message["offset"] <= last[1]:
            self.repeats.append(message)
            return
        self.positions[name] = (message["epoch"], message["offset"])
        self.frames.setdefault(name, {})[message["offset"]] = as_sent(message)
        if is_event(message):
            self.events.setdefault(name, []).append(as_sent(message))

    def _stream_of(self, message: dict[str, Any]) -> str:
        channel = message["channel"]
        key = message.get("user_address") or message.get("market_id")
        return channel if channel == "liquidations" else f"{channel}:{key}"

    async def connected_for(self, seconds: float) -> None:
        """One connection: subscribe (resuming where known), record for ``seconds`` once every
        stream has said ``connected`` (a loaded machine may take a while to), then drop it."""
        self.connections += 1
        started = len(self.recovered)
        async with connect(self.base + self._path()) as ws:
            await self._subscribe(ws)
            with trio.CancelScope() as scope:
                try:
                    while True:
                        self._record(json.loads(await ws.get_message()))
                        self._arrived.set()
                        self._arrived = trio.Event()
                        if scope.deadline == math.inf and len(self.recovered) - started == len(self.streams):
                            scope.deadline = trio.current_time() + seconds
                except ConnectionClosed as closed:
                    self.closes.append(closed.reason.code)

    async def wait_until(self, done: Callable[[], bool], *, timeout: float = 15) -> None:
        """Until ``done()`` (checked as frames arrive, while another task reads)."""
        with trio.fail_after(timeout):
            while not done():
                await self._arrived.wait()

    async def wait_for_offset(self, name: str, offset: int, *, timeout: float = 15) -> None:
        """Until ``name``'s stream has been received through ``offset``."""
        await self.wait_until(lambda: name in self.positions and self.positions[name][1] >= offset, timeout=timeout)

    async def wait_for_event(self, name: str, accept: Callable[[dict[str, Any]], bool], *,
                             timeout: float = 20) -> None:
        """Until an event of ``name``'s stream that ``accept`` accepts has arrived."""
        await self.wait_until(lambda: any(accept(e) for e in self.events.get(name, [])), timeout=timeout)
