"""A deployment as operators run it: Redis, cores and edges, each a real process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.reliability.daemon_process import DaemonProcess

from .redis_server import RedisServer

__all__ = ["cluster_settings", "is_active", "start_node", "wait_ready"]


def cluster_settings(redis: RedisServer, data_dir: Path, **sections: Any) -> dict[str, Any]:
    """A core's or an edge's config: the embedded demo trading fast, the bus on ``redis``."""
    settings: dict[str, Any] = {
        "server": {"data_dir": str(data_dir)},
        "bus": {"kind": "redis", "url": redis.url, "lease_ttl_s": 1.5},
        "streams": {"prices_interval_ms": 250, "liquidations_interval_ms": 1000, "positions_interval_ms": 500},
        "chain": {"demo": {"trade_interval_ms": 150}},
        "ws": {"ping_interval_s": 2.0, "send_timeout_s": 10.0},
    }
    for name, values in sections.items():
        settings[name] = {**settings.get(name, {}), **values}
    return settings


async def wait_ready(node: DaemonProcess, *, timeout: float = 60) -> None:
    """Until ``/readyz`` says ready (an edge: Redis reachable and a core active)."""
    async with httpx.AsyncClient(base_url=node.http, timeout=5) as http:
        with trio.fail_after(timeout):
            while (await http.get("/readyz")).status_code != 200:
                await trio.sleep(0.1)


async def start_node(workdir: Path, settings: dict[str, Any], role: str) -> DaemonProcess:
    node = DaemonProcess(workdir, settings, role=role)
    await node.start()
    return node


async def is_active(core: DaemonProcess) -> bool:
    """Whether ``core`` holds the lease (its ``/debug/actors`` says so)."""
    async with httpx.AsyncClient(base_url=core.http, timeout=5) as http:
        return bool((await http.get("/debug/actors")).json()["deployment"]["active"])
