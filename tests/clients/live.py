"""A live daemon for the client tests: the embedded demo, made eventful and quick.

Real time and real sockets: the clients under test are real programs
(Node, a trio-websocket script, the terminal client) talking to the real
daemon over loopback, directly or through a :class:`CuttableProxy` that
drops their connections on cue.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
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


class CuttableProxy:
    """A TCP relay in front of the daemon that can drop every connection and hold new ones.

    :meth:`cut` ends the relayed connections abruptly (no close frame: the
    client sees the network fail, 1006) and holds the connections that
    arrive afterwards, unanswered, until :meth:`release`; a reconnecting
    client then gets through at once instead of backing off further, so a
    test decides exactly how long it stays away.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._open = trio.Event()
        self._open.set()
        self._relays: set[trio.CancelScope] = set()

    def url(self, path: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Drop every relayed connection now; hold new ones until :meth:`release`."""
        if self._open.is_set():
            self._open = trio.Event()
        for relay in self._relays:
            relay.cancel()

    def release(self) -> None:
        self._open.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        await self._open.wait()
        with trio.CancelScope() as relay:
            self._relays.add(relay)
            try:
                async with await trio.open_tcp_stream("127.0.0.1", self.upstream_port) as server:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
                        nursery.start_soon(self._pump, server, client, nursery.cancel_scope)
            finally:
                self._relays.discard(relay)
        await trio.aclose_forcefully(client)

    @staticmethod
    async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()  # either side ending ends the relay


@asynccontextmanager
async def cuttable_proxy(upstream_port: int) -> AsyncIterator[CuttableProxy]:
    """A :class:`CuttableProxy` to ``upstream_port`` for the duration of the block."""
    proxy = CuttableProxy(upstream_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        yield proxy
        nursery.cancel_scope.cancel()


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
        def found() -> list[str]:
            return [line for line in (self.stderr if stderr else self.stdout) if re.search(pattern, line)]

        try:
            await self.wait_until(lambda: len(found()) >= count, timeout=timeout)
        except trio.TooSlowError:
            raise AssertionError(f"{count} line(s) matching {pattern!r} not printed in {timeout:g} s\n"
                                 f"{self.output()}") from None
        return found()

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = 15) -> None:
        """Until ``condition()`` holds, checked whenever the program prints a line."""
        with trio.fail_after(timeout):
            while not condition():
                await self._changed.wait()

    async def wait(self, timeout: float = 10) -> int:
        """The program's exit status, once it has exited; fails with its output after ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            return await self.process.wait()
        raise AssertionError(f"still running after {timeout:g} s\n{self.output()}")

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout, "--- stderr", *self.stderr])


def _sigint_as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def start_program(
    nursery: trio.Nursery, argv: Sequence[str], *, cwd: Path | None = None, stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> Program:
    """Start ``argv`` and collect its output in ``nursery`` (which waits for it to end).

    The program gets SIGINT's default disposition, as from a terminal: a
    shell starting the tests in the background (``make test &``) ignores
    SIGINT in them, and a Python program started with it ignored would
    never see the Ctrl-C the tests send.
    """
    process = await trio.lowlevel.open_process(
        list(argv), cwd=cwd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
        preexec_fn=_sigint_as_from_a_terminal,
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


def assert_resumed_without_loss(control: Sequence[int], resumed: Sequence[int], *, since: int, away: int) -> None:
    """A client that resumed after ``since`` got exactly the events a client that stayed connected got.

    ``control`` and ``resumed`` are the event offsets each client handled,
    in order. The resumed client was away from just after ``since`` (the
    offset it resumed from) until after the control had seen ``away``, so
    the events in between reached it only by the server's replay. Compared
    from ``since`` (or the control's first event, if later: it has every
    event from there on) to the last event both have; not one twice.
    """
    assert list(resumed) == sorted(set(resumed)), f"repeated or out of order: {resumed}"
    assert control and resumed, (control, resumed)
    low, high = max(since + 1, control[0]), min(control[-1], resumed[-1])
    missed = [offset for offset in control if since < offset <= away]
    assert missed and away <= high, f"nothing was missed while away: {since=} {away=} {control=} {resumed=}"
    assert [o for o in resumed if low <= o <= high] == [o for o in control if low <= o <= high]
