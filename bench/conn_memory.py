"""Where a WebSocket connection's memory goes: tracemalloc of the daemon per connection.

    python bench/conn_memory.py [--clients 2000] [--hold 5] [--top 25]

Runs the daemon in this process (``config/bench.toml``, a free port) with
tracemalloc on, then a client process that opens ``--clients`` price
streams over raw sockets and reads them. Once all are open and a few
prices have gone out, the Python heap is compared with its state before
the clients came: the growth, divided by the number of connections, is
listed by allocation site and by package. The client process then leaves
and the heap is compared again, to show what a connection leaves behind.

The figures are Python allocations (tracemalloc cannot see the kernel's
socket buffers or the allocator's slack), so they sum to less than the RSS
growth, which is printed beside them; RSS is inflated here by tracemalloc's
own records. ``fanout.py`` measures RSS per connection without tracing.
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import attrs
import trio

ROOT = Path(__file__).resolve().parent.parent
MARKETS = ("btc-usdc-perp", "eth-usdc-perp", "sol-usdc-perp")
HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# ---------------------------------------------------------------- the clients


async def hold_clients(port: int, clients: int) -> None:
    """Open ``clients`` price streams, say so on stdout, read until stdin closes."""

    async def client(index: int, task_status: trio.TaskStatus[None]) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        path = f"/api/v1/ws/prices/{MARKETS[index % len(MARKETS)]}"
        await stream.send_all(HANDSHAKE.format(path=path, port=port).encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some(4096)
        if not answer.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"handshake refused: {answer[:80]!r}")
        task_status.started()
        while await stream.receive_some(65536):
            pass

    async with trio.open_nursery() as nursery:
        for index in range(clients):
            await nursery.start(client, index)
        print(f"open {clients}", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes our stdin
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- the daemon


@attrs.frozen
class Growth:
    """Heap growth between two snapshots, per connection."""

    by_site: list[tuple[str, float, float]]  # site, bytes per connection, blocks per connection
    by_package: list[tuple[str, float]]
    total: float


def _where(filename: str) -> tuple[str, str]:
    """The package an allocating file belongs to, and its path within the tree."""
    if filename.startswith("<attrs generated"):  # e.g. "<attrs generated methods trio._core._run.Task>"
        return filename.split()[-1].split(".")[0], filename
    parts = Path(filename).parts
    if "site-packages" in parts:
        inside = parts[parts.index("site-packages") + 1:]
        return inside[0].removesuffix(".py"), "/".join(inside)
    for top in ("perpstream", "actors"):
        if top in parts:
            inside = parts[parts.index(top):]
            return "/".join(inside[:2]).removesuffix(".py"), "/".join(inside)
    return ("python stdlib" if "python3" in filename else filename), Path(filename).name


def growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, connections: int, top: int) -> Growth:
    own = tracemalloc.Filter(False, tracemalloc.__file__)
    before, after = before.filter_traces([own]), after.filter_traces([own])
    stats = after.compare_to(before, "lineno")
    by_site = [
        (f"{_where(s.traceback[0].filename)[1]}:{s.traceback[0].lineno}", s.size_diff / connections,
         s.count_diff / connections)
        for s in stats[:top]
    ]
    total = sum(s.size_diff for s in stats)
    packages: Counter[str] = Counter()
    for s in stats:
        packages[_where(s.traceback[0].filename)[0]] += s.size_diff
    return Growth(
        by_site=by_site,
        by_package=[(name, size / connections) for name, size in packages.most_common() if size >= 0.01 * total],
        total=total / connections,
    )


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def heap_snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot()


async def measure(args: argparse.Namespace) -> None:
    from perpstream.config import load_config
    from perpstream.daemon import run_daemon

    config = load_config(ROOT / "config" / "bench.toml")
    data_dir = trio.Path(args.data_dir)
    await data_dir.mkdir(parents=True, exist_ok=True)
    config = attrs.evolve(config, server=attrs.evolve(config.server, port=0, data_dir=str(data_dir)))
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: run_daemon(config, shutdown=shutdown, task_status=task_status))
        port = bound[0][1]
        await trio.sleep(args.hold)  # markets publishing, the chain idle: the baseline
        start_rss, start = rss_kib(), heap_snapshot()
        print(f"daemon up on port {port}; opening {args.clients} connections", flush=True)
        clients = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--clients-only", str(port), "--clients", str(args.clients)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert clients.stdout is not None and clients.stdin is not None
        line = (await clients.stdout.receive_some(100)).decode().strip()
        print(f"client process: {line or 'gone'}; holding {args.hold:.0f} s", flush=True)
        await trio.sleep(args.hold)
        open_rss, opened = rss_kib(), heap_snapshot()
        await clients.stdin.aclose()
        await clients.wait()
        await trio.sleep(args.hold)  # the daemon notices the closes and cleans up
        ended = heap_snapshot()
        shutdown.set()

    held = growth(start, opened, args.clients, args.top)
    left = growth(start, ended, args.clients, args.top)
    print(f"\n{args.clients} connections: RSS +{(open_rss - start_rss) / args.clients:.1f} KiB per connection "
          f"(tracing inflates it); Python heap +{held.total / 1024:.1f} KiB per connection")
    print(f"\n{'KiB/conn':>9} {'blocks':>7}  allocated at (while the connections are open)")
    for site, size, count in held.by_site:
        print(f"{size / 1024:9.2f} {count:7.1f}  {site}")
    print(f"\n{'KiB/conn':>9}  package")
    for name, size in held.by_package:
        print(f"{size / 1024:9.2f}  {name}")
    print(f"\nafter they left: Python heap {left.total:+.0f} B per connection, largest:")
    for site, size, count in left.by_site[:8]:
        print(f"{size:9.0f} B {count:7.2f}  {site}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to let things settle at each step")
    parser.add_argument("--top", type=int, default=25, help="allocation sites to list")
    parser.add_argument("--data-dir", default=str(ROOT / "bench" / "results" / "conn-memory"))
    parser.add_argument("--clients-only", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one descriptor per connection, both ends
    if args.clients_only:
        trio.run(hold_clients, args.clients_only, args.clients)
        return
    tracemalloc.start(1)
    trio.run(measure, args)


if __name__ == "__main__":
    main()
