"""``--role edge --workers N``: N edge processes on one port, one parent that stops them all."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio

from tests.reliability.daemon_process import DaemonProcess

from .cluster import cluster_settings, start_node, wait_ready
from .redis_server import RedisServer

pytestmark = pytest.mark.e2e


async def test_two_workers_share_the_port_and_stop_together(redis: RedisServer, tmp_path: Path) -> None:
    settings = cluster_settings(redis, tmp_path / "data")
    nodes: list[DaemonProcess] = []
    try:
        nodes.append(await start_node(tmp_path / "core", settings, "core"))
        edges = DaemonProcess(tmp_path / "edges", settings, role="edge", extra=("--workers", "2"))
        nodes.append(edges)
        await edges.start()
        await wait_ready(edges)
        pids: set[int] = set()
        with trio.fail_after(30):
            while len(pids) < 2:  # each request on a new connection: the kernel picks a worker
                async with httpx.AsyncClient(base_url=edges.http, timeout=5) as http:
                    pids.add((await http.get("/debug/actors")).json()["deployment"]["pid"])
        assert edges.pid not in pids
        assert await edges.stop() == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        for node in nodes:
            node.ensure_stopped()
