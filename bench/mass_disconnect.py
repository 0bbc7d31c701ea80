"""10,000 clients leave at once: how long until the server has let go of every one.

    python bench/mass_disconnect.py [--clients 10000] [--server-file PATH]

Each server runs in a process of its own on a free loopback port; this
process opens ``--clients`` TCP connections to it, each sending one HTTP
request and keeping the connection alive (hypercorn then holds it, the
guard sweeps it), waits until the server holds them all, and resets them
all at once (SO_LINGER 0). The server times from the first connection it
lets go to the last, and, for the guarded server, the time spent in
``ConnectionGuard.release``.

Two servers in the same run:

- **bare trio**, the baseline: ``trio.serve_tcp`` with a handler that reads
  until the peer goes, the least any trio server does per disconnect;
- **guarded**: perpstream's server (``perpstream.web.server.serve``: hypercorn
  behind the guard), or with ``--server-file`` another copy of that module,
  e.g. an older ``perpstream/web/server.py`` to compare against.

Printed as the guarded server's times and their ratio to the baseline's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
REQUEST = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


# ---------------------------------------------------------------- the servers (child process)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Clock:
    """First and last disconnect, as the server sees them."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.open = 0
        self.first: float | None = None
        self.last = 0.0
        self.all_open = trio.Event()
        self.all_gone = trio.Event()

    def opened(self) -> None:
        self.open += 1
        if self.open == self.clients:
            self.all_open.set()

    def closed(self) -> None:
        now = time.perf_counter()
        self.first = now if self.first is None else self.first
        self.last = now
        self.open -= 1
        if self.open == 0 and self.all_open.is_set():
            self.all_gone.set()


async def _report(clock: _Clock, extra: Callable[[], dict[str, float]]) -> None:
    """Say when every client is in, then, once all are gone, the figures (one JSON line)."""
    await clock.all_open.wait()
    print("open", flush=True)
    await clock.all_gone.wait()
    assert clock.first is not None
    print(json.dumps({"seconds": clock.last - clock.first, **extra()}), flush=True)


async def serve_bare(clients: int) -> None:
    clock = _Clock(clients)

    async def handler(stream: trio.SocketStream) -> None:
        clock.opened()
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        finally:
            clock.closed()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
        print(listeners[0].socket.getsockname()[1], flush=True)
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        await _report(clock, dict)
        nursery.cancel_scope.cancel()


async def serve_guarded(clients: int, server_file: str | None) -> None:
    from quart_trio import QuartTrio

    if server_file is None:
        from perpstream.web import server as module
    else:
        spec = importlib.util.spec_from_file_location("server_under_test", server_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

    clock = _Clock(clients)
    spent = [0.0]

    class TimedGuard(module.ConnectionGuard):  # type: ignore[name-defined,misc]
        def wrap(self, stream: trio.SocketStream) -> Any:
            clock.opened()
            return super().wrap(stream)

        def release(self, stream: Any) -> None:
            started = time.perf_counter()
            super().release(stream)
            spent[0] += time.perf_counter() - started
            clock.closed()

    app = QuartTrio("mass-disconnect")

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    guard = TimedGuard(send_timeout=60.0, idle_timeout=None)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: module.serve(
            app, host="127.0.0.1", port=0, guard=guard, max_message_bytes=1 << 16,
            shutdown_trigger=shutdown.wait, task_status=task_status))
        print(bound[0][1], flush=True)
        await _report(clock, lambda: {"release_seconds": spent[0]})
        shutdown.set()


# ---------------------------------------------------------------- the clients (this process)


async def _open_clients(port: int, clients: int) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    limit = trio.CapacityLimiter(256)

    async def one() -> None:
        async with limit:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(REQUEST)
            sockets.append(socket.socket(fileno=stream.socket.detach()))

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one)
    return sockets


def measure(kind: str, clients: int, server_file: str | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--serve", kind, "--clients", str(clients)]
    if server_file:
        command += ["--server-file", server_file]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert server.stdout is not None
    try:
        port = int(server.stdout.readline())
        raw = trio.run(_open_clients, port, clients)
        assert server.stdout.readline().strip() == "open"
        for sock in raw:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for sock in raw:
            sock.close()
        return json.loads(server.stdout.readline())  # type: ignore[no-any-return]
    finally:
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--server-file", help="a copy of perpstream/web/server.py to measure instead")
    parser.add_argument("--serve", choices=["bare", "guarded"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    _raise_fd_limit()
    if args.serve == "bare":
        trio.run(serve_bare, args.clients)
        return
    if args.serve == "guarded":
        sys.path.insert(0, str(ROOT))
        trio.run(serve_guarded, args.clients, args.server_file)
        return
    bare = measure("bare", args.clients, None)
    guarded = measure("guarded", args.clients, args.server_file)
    name = args.server_file or "perpstream.web.server"
    print(f"{args.clients} clients reset at once; first to last disconnect seen by the server")
    print(f"  bare trio (baseline) {bare['seconds']:8.3f} s   1.00x")
    print(f"  guarded ({name}) {guarded['seconds']:8.3f} s   {guarded['seconds'] / bare['seconds']:.2f}x"
          f"   of which in ConnectionGuard.release {guarded['release_seconds']:.3f} s"
          f" ({guarded['release_seconds'] / bare['seconds']:.2f}x the baseline's whole time)")


if __name__ == "__main__":
    main()
