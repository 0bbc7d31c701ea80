"""The guarded server cuts a client that stops reading, on a real socket.

Real time and real sockets: the hazard lives in the kernel's TCP buffers and
hypercorn's shielded send, which a virtual clock cannot reproduce.
"""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack

import pytest
import trio
from quart import websocket
from quart_trio import QuartTrio
from trio_websocket import open_websocket_url

from perpstream.web.server import ConnectionGuard, serve
from perpstream.web.stream import GuardedStream

pytestmark = pytest.mark.e2e


def _flood_app(ended: list[str]) -> QuartTrio:
    app = QuartTrio("guard-test")

    @app.websocket("/flood")
    async def flood() -> None:
        chunk = "x" * 60_000
        try:
            while True:
                await websocket.send(chunk)
                # hypercorn drops sends after a close without a checkpoint; a
                # writer must yield so the disconnect's cancellation reaches it.
                await trio.lowlevel.checkpoint()
        finally:
            ended.append("flood")

    @app.websocket("/echo")
    async def echo() -> None:
        while True:
            await websocket.send(await websocket.receive())

    return app


async def _serve_on_loopback(nursery: trio.Nursery, app: QuartTrio, guard: ConnectionGuard,
                             shutdown: trio.Event) -> int:
    """Start the guarded server on a free loopback port until ``shutdown``; its port."""
    bound = await nursery.start(
        lambda task_status: serve(
            app, host="127.0.0.1", port=0, guard=guard,
            max_message_bytes=1 << 20, shutdown_trigger=shutdown.wait, task_status=task_status,
        )
    )
    return int(bound[0][1])


def _raw_handshake(port: int, path: str) -> socket.socket:
    """Open a WebSocket with a tiny receive buffer, then never read from it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return sock


async def test_a_client_that_stops_reading_is_cut_within_send_timeout() -> None:
    ended: list[str] = []
    guard = ConnectionGuard(send_timeout=1.0, idle_timeout=None)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await _serve_on_loopback(nursery, _flood_app(ended), guard, shutdown)
        stalled = _raw_handshake(port, "/flood")
        started = trio.current_time()
        async with open_websocket_url(f"ws://127.0.0.1:{port}/echo") as healthy:
            # The healthy client keeps its round trips while the other one is stuck.
            while not ended:
                with trio.fail_after(1):
                    await healthy.send_message("ping")
                    assert await healthy.get_message() == "ping"
                await trio.sleep(0.1)
                assert trio.current_time() - started < 10, "stalled client was never cut"
        elapsed = trio.current_time() - started
        assert guard.cut_slow == 1
        assert 0.75 <= elapsed < 5.0  # blocked for the send timeout less one sweep period (0.25 s)
        assert not guard.streams or all(s.cut_reason is None for s in guard.streams)
        stalled.close()
        shutdown.set()


async def test_a_silent_peer_is_cut_after_idle_timeout() -> None:
    guard = ConnectionGuard(send_timeout=5.0, idle_timeout=0.5)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await _serve_on_loopback(nursery, _flood_app([]), guard, shutdown)
        sock = socket.create_connection(("127.0.0.1", port))
        with trio.fail_after(5):
            while guard.cut_idle == 0:
                await trio.sleep(0.05)
        sock.close()
        shutdown.set()


async def test_a_timeout_is_a_deadline_not_a_threshold(autojump_clock: trio.abc.Clock) -> None:
    # The guard sweeps once a second (a quarter of 4 s, at most 1 s), at 1, 2,
    # 3, 4, 5 s; the peer connects at 0.5 s and never sends a byte. Its 4 s of
    # silence end at 4.5 s: the sweep at 4 s cuts it, not the one at 5 s.
    guard = ConnectionGuard(send_timeout=30.0, idle_timeout=4.0)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        far = socket.create_connection(listener.getsockname())
        near, _ = listener.accept()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard.run)
        await trio.sleep(0.5)
        guard.wrap(trio.SocketStream(trio.socket.from_stdlib_socket(near)))
        await trio.sleep(3.0)  # 3.5 s: silent for 3 s, not yet
        assert guard.cut_idle == 0
        await trio.sleep(1.0)  # 4.5 s: the deadline
        assert guard.cut_idle == 1
        nursery.cancel_scope.cancel()
    far.close()


async def test_shutdown_does_not_wait_for_idle_keep_alive_connections() -> None:
    import httpx

    app = _flood_app([])

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    guard = ConnectionGuard(send_timeout=5.0, idle_timeout=None)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await _serve_on_loopback(nursery, app, guard, shutdown)
        async with httpx.AsyncClient() as client:  # keeps its connection alive after the request
            assert (await client.get(f"http://127.0.0.1:{port}/ping")).text == "pong"
            started = trio.current_time()
            shutdown.set()
    # hypercorn alone would hold the idle connection for its whole graceful timeout (5 s here)
    assert trio.current_time() - started < 1.0


async def test_the_guard_pings_websockets_and_keeps_the_ones_that_answer() -> None:
    guard = ConnectionGuard(send_timeout=5.0, idle_timeout=1.0, ping_interval=0.3)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await _serve_on_loopback(nursery, _flood_app([]), guard, shutdown)
        # trio-websocket answers pings with pongs by itself.
        async with open_websocket_url(f"ws://127.0.0.1:{port}/echo") as answering:
            silent = await trio.to_thread.run_sync(_raw_handshake, port, "/echo")
            await trio.sleep(2.5)
            assert guard.pings_sent >= 4
            assert guard.cut_idle == 1, "the peer that never answers pings is cut"
            await answering.send_message("still here")
            assert await answering.get_message() == "still here"
            silent.close()
        shutdown.set()


class _CountingGuard(ConnectionGuard):
    """Records how many pings each sweep sent."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.rounds: list[int] = []

    def sweep(self) -> None:
        before = self.pings_sent
        super().sweep()
        self.rounds.append(self.pings_sent - before)


async def test_pings_are_spread_over_the_interval_not_sent_in_one_burst() -> None:
    # One ping interval is five sweeps; forty clients connecting at once.
    clients, interval = 40, 1.0
    guard = _CountingGuard(send_timeout=0.8, idle_timeout=None, ping_interval=interval)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await _serve_on_loopback(nursery, _flood_app([]), guard, shutdown)
        url = f"ws://127.0.0.1:{port}/echo"
        async with AsyncExitStack() as stack:
            for _ in range(clients):
                await stack.enter_async_context(open_websocket_url(url))
            guard.rounds.clear()
            await trio.sleep(3 * interval)
            # Each client about once per interval, a fifth of them per sweep.
            assert 2 * clients <= sum(guard.rounds) <= 4 * clients, guard.rounds
            assert max(guard.rounds) <= clients // 2, guard.rounds
        shutdown.set()


class _FailingStream(GuardedStream):
    """A stream whose protocol handling fails when the peer sends ``BOOM``: any bug below the app."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await super().receive_some(max_bytes)
        if data.startswith(b"BOOM"):
            raise RuntimeError("a failure inside the connection's protocol handling")
        return data


class _FaultyGuard(ConnectionGuard):
    def wrap(self, stream: trio.SocketStream) -> GuardedStream:
        guarded = super().wrap(stream)
        failing = _FailingStream(stream)
        del self.streams[guarded]
        self.streams[failing] = None
        return failing


async def test_a_failure_inside_one_connection_stays_in_it(caplog: pytest.LogCaptureFixture) -> None:
    guard = _FaultyGuard(send_timeout=5.0, idle_timeout=None)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await _serve_on_loopback(nursery, _flood_app([]), guard, shutdown)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/echo") as bystander:
            for _ in range(3):
                with trio.fail_after(5):
                    failing = await trio.open_tcp_stream("127.0.0.1", port)
                    peer = "%s:%d" % failing.socket.getsockname()[:2]
                    await failing.send_all(b"BOOM")
                    assert await failing.receive_some(100) == b""  # the server closed it
                await failing.aclose()
                assert any(peer in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
            await bystander.send_message("still here")
            assert await bystander.get_message() == "still here"
        assert guard.protocol_errors == 3
        assert len([r for r in caplog.records if "protocol handling failed" in r.getMessage()]) == 3
        shutdown.set()


async def test_release_forgets_a_stream_without_looking_at_the_others() -> None:
    guard = ConnectionGuard(send_timeout=5.0, idle_timeout=None)
    pairs = [socket.socketpair() for _ in range(3)]
    streams = [guard.wrap(trio.SocketStream(trio.socket.from_stdlib_socket(a))) for a, _ in pairs]
    guard.release(streams[1])
    assert list(guard.streams) == [streams[0], streams[2]]
    guard.release(streams[1])  # twice is harmless
    for a, b in pairs:
        a.close()
        b.close()
