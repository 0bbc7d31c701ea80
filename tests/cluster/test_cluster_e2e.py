"""A core and two edges over a real Redis, each a real process.

Clients on different edges receive the same frames (same offsets, same
epoch, same bytes but ``seq``) while the demo trades and liquidates; an
account watched only through an edge has its session run by the core; REST
and ``/debug/actors`` on an edge answer from what the core publishes. (A
client whose edge is killed with ``-9`` resuming on the other is in
tests/chain/test_cluster_on_chain_e2e.py.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import coredis
import httpx
import pytest
import trio

from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.resuming import ResumingClient

from .cluster import cluster_settings, start_node, wait_ready
from .redis_server import RedisServer

pytestmark = pytest.mark.e2e

BTC = "btc-usdc-perp"


async def an_account(redis: RedisServer, *, timeout: float = 30) -> str:
    """An account the demo traders have used (its positions stream has events on the bus)."""
    client = coredis.Redis.from_url(redis.url)
    async with client:
        with trio.fail_after(timeout):
            while True:
                keys = [k async for k in client.scan_iter(match="perpstream:ev:positions:*")]
                if keys:
                    return keys[0].decode().rsplit(":", 1)[1]
                await trio.sleep(0.2)


def streams_of(account: str) -> dict[str, dict[str, Any]]:
    return {
        "liquidations": {"channel": "liquidations"},
        f"positions:{account}": {"channel": "positions", "user_address": account},
        f"prices:{BTC}": {"channel": "prices", "market_id": BTC},
    }


async def until_both_reach(a: ResumingClient, b: ResumingClient, name: str, *, events: int, shared: int = 0) -> int:
    """The offset both clients have received ``name`` through, once each has ``events`` events of it
    and both have ``shared`` frames of it at the same offsets (a snapshot one of them had conflated
    away is not shared, so a stream of snapshots needs a wait of its own)."""
    def enough() -> bool:
        return (all(name in c.positions and len(c.events.get(name, [])) >= events for c in (a, b))
                and len(set(a.frames.get(name, {})) & set(b.frames.get(name, {}))) >= shared)

    with trio.move_on_after(60):
        while not enough():
            await trio.sleep(0.1)
    assert enough(), (
        name, len(a.events.get(name, [])), len(b.events.get(name, [])), len(a.frames.get(name, {})),
        len(b.frames.get(name, {})), a.recovered, b.recovered)
    target = max(a.positions[name][1], b.positions[name][1])
    for client in (a, b):
        await client.wait_for_offset(name, target)
    return target


@pytest.fixture
async def deployment(redis: RedisServer, tmp_path: Path) -> Any:
    settings = cluster_settings(redis, tmp_path / "data")
    nodes: list[DaemonProcess] = []
    try:
        nodes.append(await start_node(tmp_path / "core", settings, "core"))
        for i in (1, 2):
            nodes.append(await start_node(tmp_path / f"edge{i}", settings, "edge"))
        for node in nodes:
            await wait_ready(node)
        yield nodes
    finally:
        for node in nodes:
            node.ensure_stopped()


async def test_clients_on_two_edges_receive_identical_frames_and_rest_answers_from_the_bus(
    deployment: list[DaemonProcess], redis: RedisServer,
) -> None:
    account = await an_account(redis)
    core, edge1, edge2 = deployment
    streams = streams_of(account)
    a, b = ResumingClient(edge1.ws(""), streams), ResumingClient(edge2.ws(""), streams)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.connected_for, math.inf)
        nursery.start_soon(b.connected_for, math.inf)
        targets = {name: await until_both_reach(a, b, name, shared=2,
                                                events=2 if name.startswith("positions") else 0)
                   for name in streams}
        nursery.cancel_scope.cancel()
    epochs = {frame["epoch"] for client in (a, b) for frames in client.frames.values() for frame in frames.values()}
    assert len(epochs) == 1
    for name, target in targets.items():
        common = sorted(set(a.frames[name]) & set(b.frames[name]))
        assert len(common) >= 2, name  # snapshots may be conflated for one of them: compare what both got
        assert all(a.frames[name][offset] == b.frames[name][offset] for offset in common), name
        first = max(min(a.frames[name]), min(b.frames[name]))
        assert [e for e in a.events.get(name, []) if first < e["offset"] <= target] == \
            [e for e in b.events.get(name, []) if first < e["offset"] <= target], name
    assert a.repeats == [] and b.repeats == []
    core_log = [e for e in core.log_entries() if e.get("level") in ("error", "critical")]
    assert not core_log, core_log

    # REST and debug on an edge answer from what the core publishes.
    async with httpx.AsyncClient(base_url=edge1.http, timeout=10) as http:
        markets = {m["market_id"]: m for m in (await http.get("/api/v1/markets")).json()["markets"]}
        assert markets[BTC]["price"]["type"] == "price_update" and markets[BTC]["stats"]["type"] == "market_stats"
        assert (await http.get("/api/v1/liquidations")).json()["type"] == "liquidation_alert"
        mine = (await http.get(f"/api/v1/positions/{account}")).json()
        assert mine["type"] == "positions_update" and mine["user_address"] == account
        listed = await http.get("/api/v1/positions", params={"limit": 1000})
        assert listed.status_code == 200, listed.text
        body = listed.json()
        ids = [row["position_id"] for row in body["positions"]]
        assert ids == sorted(ids) and body["total"] == len(ids) and body["next"] is None and body["ts"] > 0
        assert {p["position_id"] for p in mine["positions"]} <= set(ids)  # the account's are in the list
        first = (await http.get("/api/v1/positions", params={"limit": 1})).json()
        assert len(first["positions"]) == 1 and first["next"] == first["positions"][0]["position_id"]
        deployment_info = (await http.get("/debug/actors")).json()["deployment"]
    async with httpx.AsyncClient(base_url=core.http, timeout=10) as http:
        core_info = (await http.get("/debug/actors")).json()["deployment"]
    assert deployment_info["role"] == "edge" and deployment_info["active_core"] == core_info["core_id"]
