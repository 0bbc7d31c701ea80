"""A live daemon for the client tests: the embedded demo, made eventful and quick.

Real time and real sockets: the clients under test are real programs
(Node, a trio-websocket script, the terminal client) talking to the real
daemon over loopback.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import attrs
import httpx
import trio
from trio_websocket import WebSocketConnection, connect_websocket_url
from wsproto.utilities import LocalProtocolError

from perpstream.config import Config
from tests.e2e.daemon import e2e_config

# Prices that move ~11 % per tick: positions at 20-50x reach warning, critical
# and liquidatable within seconds, so every event type shows up quickly.
STORMY_VOLATILITY = Decimal("800")


def stormy_config(data_dir: Path) -> Config:
    """The embedded demo with fast trading, violent prices and short cadences."""
    config = e2e_config(
        data_dir,
        chain={"demo": {"trade_interval_ms": 100}},
        ws={"max_subscriptions_per_connection": 16},
    )
    markets = tuple(
        attrs.evolve(m, simulated=attrs.evolve(m.simulated, annual_volatility=STORMY_VOLATILITY))
        for m in config.markets
    )
    return attrs.evolve(config, markets=markets)


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket connection whose close survives a ping arriving mid-close.

    trio-websocket (<= 0.12) answers a ping that arrives during its own close
    handshake and fails with wsproto's LocalProtocolError; hypercorn pings
    right after the handshake, so short test connections meet it often.
    """
    try:
        async with trio.open_nursery() as nursery:
            ws = await connect_websocket_url(nursery, url)
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await ws.aclose()
    except* LocalProtocolError:
        pass


async def demo_account(http: httpx.AsyncClient, timeout: float = 20) -> str:
    """An account with an open position, once the demo traders have opened one."""
    with trio.fail_after(timeout):
        while True:
            positions = (await http.get("/api/v1/positions")).json()["positions"]
            if positions:
                return str(positions[0]["user_address"])
            await trio.sleep(0.2)


@attrs.define
class Program:
    """A client program running as a subprocess, its output collected line by line."""

    process: trio.Process
    stdout: list[str] = attrs.field(factory=list)
    stderr: list[str] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def _collect(self, stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines.extend(line.decode("utf-8", "replace") for line in complete)
            self._changed.set()
            self._changed = trio.Event()
        if buffer:
            lines.append(buffer.decode("utf-8", "replace"))

    def matching(self, pattern: str) -> list[str]:
        return [line for line in self.stdout if re.search(pattern, line)]

    async def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 15, stderr: bool = False) -> list[str]:
        """The first ``count`` output lines matching ``pattern``, once there are that many."""
        with trio.fail_after(timeout):
            while True:
                lines = self.stderr if stderr else self.stdout
                found = [line for line in lines if re.search(pattern, line)]
                if len(found) >= count:
                    return found
                await self._changed.wait()

    async def wait(self, timeout: float = 10) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout, "--- stderr", *self.stderr])


async def start_program(
    nursery: trio.Nursery, argv: Sequence[str], *, cwd: Path | None = None, stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> Program:
    """Start ``argv`` and collect its output in ``nursery`` (which waits for it to end)."""
    process = await trio.lowlevel.open_process(
        list(argv), cwd=cwd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
    )
    program = Program(process)
    assert process.stdout is not None and process.stderr is not None
    nursery.start_soon(program._collect, process.stdout, program.stdout)
    nursery.start_soon(program._collect, process.stderr, program.stderr)
    if stdin is not None:
        assert process.stdin is not None
        await process.stdin.send_all(stdin)
        await process.stdin.aclose()
    return program
