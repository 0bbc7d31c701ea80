"""Real WebSocket clients for the fault tests, and the daemon they talk to.

:class:`Listener` records every frame of one connection (trio-websocket on
a loopback socket) with its arrival time while the test does other things;
:func:`daemon_with` runs the real daemon in the test's trio run with
injected sources, on a free port.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from perpstream.config import Config
from perpstream.sources import Sources
from tests.e2e.daemon import Daemon, running_daemon


@attrs.define
class Listener:
    """One connection's frames, in order, with ``trio.current_time()`` of arrival."""

    url: str
    frames: list[tuple[float, dict[str, Any]]] = attrs.Factory(list)
    close_code: int | None = None
    _arrived: trio.Event = attrs.Factory(trio.Event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.frames if m["type"] == kind]

    def types(self) -> list[str]:
        return [m["type"] for _, m in self.frames]

    async def wait_until(self, accept: Callable[[dict[str, Any]], bool], *, start: int = 0,
                         timeout: float = 15.0) -> dict[str, Any]:
        """The first frame from index ``start`` on (received or still to come) that ``accept`` accepts."""
        seen = start
        with trio.fail_after(timeout):
            while True:
                for _, message in self.frames[seen:]:
                    if accept(message):
                        return message
                seen = max(seen, len(self.frames))
                if self.close_code is not None:
                    raise AssertionError(f"{self.url} closed with {self.close_code}")
                self._arrived = trio.Event()
                await self._arrived.wait()

    async def next(self, kind: str, accept: Callable[[dict[str, Any]], bool] = lambda m: True,
                   *, timeout: float = 15.0) -> dict[str, Any]:
        """The first ``kind`` frame accepted by ``accept`` that arrives from now on."""
        return await self.wait_until(lambda m: m["type"] == kind and accept(m), start=len(self.frames),
                                     timeout=timeout)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_websocket_url(self.url) as ws:
                task_status.started()
                while True:
                    message = json.loads(await ws.get_message())
                    self.frames.append((trio.current_time(), message))
                    self._arrived.set()
        except ConnectionClosed as closed:
            self.close_code = closed.reason.code
            self._arrived.set()


@attrs.define
class RunningDaemon(Daemon):
    """The daemon, with the fault tests' ways of talking to it."""

    async def listen(self, nursery: trio.Nursery, path: str) -> Listener:
        listener = Listener(self.ws(path))
        await nursery.start(listener.run)
        return listener

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http, timeout=5) as http:
            return await http.get(path)


@asynccontextmanager
async def daemon_with(config: Config, sources: Sources | None = None) -> AsyncIterator[RunningDaemon]:
    """The daemon in this trio run (real sockets, real time) until the block ends."""
    async with running_daemon(config, sources=sources) as daemon:
        yield RunningDaemon(daemon.host, daemon.port)
