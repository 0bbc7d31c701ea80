"""The servers under test, each a separate process on a free loopback port.

- ``perpstream``: the real daemon, ``python -m perpstream serve`` with a
  config derived from ``config/bench.toml`` (tick rate, markets, send
  timeout from the command line), in a scratch working directory.
- ``baseline``: ``bench/baseline_server.py`` under hypercorn's trio worker,
  sending the daemon's own price message.
- ``node-ref``: ``bench/loadgen/broadcast_server.js``, a bare Node ``ws``
  broadcaster: the reference that shows the clients keep up.
"""

from __future__ import annotations

import copy
import json
import socket
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from .loadgen import LOADGEN_DIR
from .procs import spawn, stop, tail
from .tomlgen import dump_toml

__all__ = ["DaemonSettings", "Server", "ServerError", "free_port", "start_baseline", "start_daemon",
           "start_node_reference"]

BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent
PERPSTREAM = "perpstream"
BASELINE = "baseline"
NODE_REFERENCE = "node-ref"


class ServerError(RuntimeError):
    pass


@attrs.frozen
class DaemonSettings:
    """What the command line may change in the bench config."""

    config: Path
    markets: int | None = None  # None: the config's own markets
    tick_ms: int | None = None
    prices_interval_ms: int | None = None
    send_timeout_s: float | None = None
    #: Anything else, merged into the config last (tables key by key, other values replaced).
    overrides: Mapping[str, Any] = attrs.field(factory=dict)

    def load(self) -> dict[str, Any]:
        """The config as data, with the overrides applied."""
        with open(self.config, "rb") as f:
            data = tomllib.load(f)
        if self.tick_ms is not None:
            data.setdefault("feed", {}).setdefault("simulated", {})["interval_ms"] = self.tick_ms
        if self.prices_interval_ms is not None:
            data.setdefault("streams", {})["prices_interval_ms"] = self.prices_interval_ms
        if self.send_timeout_s is not None:
            data.setdefault("ws", {})["send_timeout_s"] = self.send_timeout_s
        if self.markets is not None:
            data["markets"] = _markets(data.get("markets", []), self.markets)
        return _merged(data, self.overrides)


def _merged(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(data)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merged[key] = _merged(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _markets(configured: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The first ``count`` configured markets, plus made-up ones beyond them."""
    markets = copy.deepcopy(configured[:count])
    for i in range(len(markets), count):
        markets.append({
            "id": f"bench{i}-usdc-perp",
            "base": f"BENCH{i}",
            "pyth_feed_id": f"{i + 1:064x}",
            "simulated": {"start_price": "100", "annual_volatility": "0.8"},
        })
    return markets


@attrs.define
class Server:
    kind: str
    process: trio.Process
    port: int
    log: Path
    market_ids: list[str]
    send_timeout_s: float | None = None  # perpstream only: its guard's limits
    idle_timeout_s: float | None = None

    @property
    def pids(self) -> list[int]:
        return [self.process.pid]

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def price_paths(self) -> list[str]:
        return [f"/api/v1/ws/prices/{m}" for m in self.market_ids]

    async def stop(self) -> None:
        await stop(self.process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _died(server: Server) -> ServerError:
    return ServerError(f"{server.kind} exited with {server.process.returncode}; its log ends with:\n{tail(server.log)}")


async def _wait_tcp(server: Server, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while True:
            if server.process.returncode is not None:
                raise _died(server)
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            except OSError:
                await trio.sleep(0.1)
                continue
            await stream.aclose()
            return
    await stop(server.process)
    raise ServerError(f"{server.kind} did not listen within {timeout:.0f} s:\n{tail(server.log)}")


async def _wait_ready(server: Server, timeout: float) -> None:
    """Until /readyz says ready (prices flowing, chain indexed)."""
    await _wait_tcp(server, timeout)
    async with httpx.AsyncClient(timeout=5) as client:
        with trio.move_on_after(timeout):
            while True:
                if server.process.returncode is not None:
                    raise _died(server)
                try:
                    if (await client.get(f"{server.http}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.25)
    await stop(server.process)
    raise ServerError(f"{server.kind} was not ready within {timeout:.0f} s:\n{tail(server.log)}")


async def start_daemon(settings: DaemonSettings, *, scratch: Path, log: Path, role: str = "all",
                       bus: dict[str, Any] | None = None, kind: str = PERPSTREAM) -> Server:
    """The daemon in ``role`` (a core or an edge of a cluster: with ``bus``), once /readyz says ready."""
    data = settings.load()
    if bus is not None:
        data["bus"] = bus
    scratch.mkdir(parents=True, exist_ok=True)
    config_path = scratch / "bench-daemon.toml"
    config_path.write_text(dump_toml(data))
    port = free_port()
    process = await spawn(
        [sys.executable, "-m", "perpstream", "serve", "--config", str(config_path), "--port", str(port),
         "--role", role],
        log=log, cwd=scratch, env={"PYTHONPATH": str(ROOT)},
    )
    ws = data.get("ws", {})
    send_timeout_s = float(ws.get("send_timeout_s", 30.0))
    # As the daemon sets it: silent for two ping intervals, or the send timeout if shorter.
    idle_timeout_s = min(2 * float(ws.get("ping_interval_s", 20.0)), send_timeout_s)
    server = Server(kind, process, port, log, [m["id"] for m in data["markets"]],
                    send_timeout_s=send_timeout_s, idle_timeout_s=idle_timeout_s)
    await _wait_ready(server, timeout=120)
    return server


async def start_baseline(*, body: str, hz: float, market_ids: list[str], log: Path) -> Server:
    port = free_port()
    process = await spawn(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "0",
         "--backlog", "4096", "--bind", f"127.0.0.1:{port}", "baseline_server:app"],
        log=log, cwd=BENCH_DIR, env={"BASELINE_BODY": body, "BASELINE_HZ": str(hz)},
    )
    server = Server(BASELINE, process, port, log, market_ids)
    await _wait_tcp(server, timeout=60)
    return server


async def start_node_reference(*, node: str, body: str, hz: float, market_ids: list[str], log: Path) -> Server:
    port = free_port()
    config = {"port": port, "hz": hz, "body": body}
    process = await spawn([node, str(LOADGEN_DIR / "broadcast_server.js"), json.dumps(config)], log=log)
    server = Server(NODE_REFERENCE, process, port, log, market_ids)
    await _wait_tcp(server, timeout=30)
    return server
