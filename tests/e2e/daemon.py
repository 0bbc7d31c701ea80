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
from perpstream.sources import Sources


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


def free_port() -> int:
    """A loopback port nobody listens on right now (connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def running_daemon(
    config: Config, *, sources: Sources | None = None, port: int | None = None
) -> AsyncIterator[Daemon]:
    """The daemon on loopback until the block ends: on ``port`` (a free one by default),
    with ``sources`` instead of the configured ones if given."""
    server = attrs.evolve(config.server, host="127.0.0.1", port=port or free_port())
    config = attrs.evolve(config, server=server)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: run_daemon(config, sources=sources, shutdown=shutdown, task_status=task_status)
        )
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


def stalled_client(port: int) -> socket.socket:
    """A WebSocket client that floods requests and never reads a byte."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:  # the handshake is read; nothing after it ever is
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def masked_text_frame(payload: bytes) -> bytes:
    header = bytearray([0x81])
    length = len(payload)
    if length < 126:
        header.append(0x80 | length)
    else:
        header.append(0x80 | 126)
        header += length.to_bytes(2, "big")
    mask = b"\x01\x02\x03\x04"
    return bytes(header) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
