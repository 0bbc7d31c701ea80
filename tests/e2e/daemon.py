"""The real daemon in this test's trio run, on a real loopback socket.

Real time: the embedded chain runs py-evm in a worker thread and the
sockets are real, neither of which a virtual clock can drive.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from perpstream.config import Config, parse_config
from perpstream.daemon import run_daemon


def e2e_config(data_dir: Path, **sections: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 1, "data_dir": str(data_dir)},
        "streams": {"prices_interval_ms": 250, "liquidations_interval_ms": 1000,
                    "market_stats_interval_ms": 1000, "positions_interval_ms": 500},
        "chain": {"demo": {"trade_interval_ms": 300}},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_config(data)


@attrs.define
class Daemon:
    host: str
    port: int

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws(self, path: str) -> str:
        return f"ws://{self.host}:{self.port}{path}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def running_daemon(config: Config) -> AsyncIterator[Daemon]:
    config = attrs.evolve(config, server=attrs.evolve(config.server, port=_free_port()))
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: run_daemon(config, shutdown=shutdown, task_status=task_status))
        host, port = bound[0]
        try:
            yield Daemon(host, port)
        finally:
            shutdown.set()


async def receive_json(ws: WebSocketConnection, timeout: float = 10) -> dict[str, Any]:
    with trio.fail_after(timeout):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def receive_until(ws: WebSocketConnection, wanted: str, timeout: float = 15) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while True:
            message = json.loads(await ws.get_message())
            if message["type"] == wanted:
                return message  # type: ignore[no-any-return]


@asynccontextmanager
async def websocket(daemon: Daemon, path: str) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(daemon.ws(path)) as ws:
        yield ws
