"""A deployment as operators run it, on Hardhat's node: Redis, two cores, two edges.

Each core has a data directory of its own (as on two machines), so the
standby that takes over after a ``kill -9`` of the active core indexes the
chain from the start: every event the first core published comes to it
again as a new delivery. Clients must not be told of those again, and must
be told of everything after: a control client on one edge sees each
event's pending and final copy once, in chain order, on one connection all
along; a client whose edge is then killed with ``-9`` resumes on the other
and ends with exactly the control's events.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.cluster.cluster import cluster_settings, is_active, wait_ready
from tests.cluster.redis_server import RedisServer, redis  # noqa: F401 - the fixture
from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.resuming import ResumingClient

from .conftest import OnNode
from .helpers import BTC
from .test_resume_across_restart_e2e import final, on_node, open_long

pytestmark = pytest.mark.e2e


def node_settings(server: RedisServer, hardhat: OnNode, data_dir: Path) -> dict[str, Any]:
    return cluster_settings(server, data_dir, chain=on_node(hardhat))


async def test_two_cores_and_two_edges_on_one_chain_lose_and_repeat_nothing_through_kill_9_of_a_core_and_an_edge(
    redis: RedisServer, hardhat: OnNode, tmp_path: Path,  # noqa: F811 - the fixture
) -> None:
    trader = hardhat.exchange.traders[0]
    name, prices = f"positions:{trader}", f"prices:{BTC}"
    nodes = {role: DaemonProcess(tmp_path / role, node_settings(redis, hardhat, tmp_path / role / "data"),
                                 role=role.rstrip("12"))
             for role in ("core1", "core2", "edge1", "edge2")}
    first, second, edge1, edge2 = nodes.values()
    streams = {name: {"channel": "positions", "user_address": trader},
               prices: {"channel": "prices", "market_id": BTC}}
    control, moving = ResumingClient(edge2.ws(""), streams), ResumingClient(edge1.ws(""), streams)
    opened: list[str] = []
    try:
        await first.start()
        await wait_ready(first)
        for node in (second, edge1, edge2):
            await node.start()
        for edge in (edge1, edge2):
            await wait_ready(edge)
        assert not await is_active(second)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(control.connected_for, math.inf)
            nursery.start_soon(moving.connected_for, math.inf)
            opened.append(await open_long(hardhat, trader))
            await hardhat.node.mine(2)
            for client in (control, moving):
                await client.wait_for_event(name, final(opened[0]))
            opened.append(await open_long(hardhat, trader))  # its final copy comes after the kill
            await control.wait_for_event(name, lambda e: e["position_id"] == opened[1])
            price_before = control.positions[prices]

            first.kill()
            killed_at = trio.current_time()
            opened.append(await open_long(hardhat, trader))  # while no core is active
            await hardhat.node.mine(3)
            with trio.fail_after(30):
                while not await is_active(second):
                    await trio.sleep(0.05)
            print(f"the standby took over {trio.current_time() - killed_at:.2f} s after the kill "
                  f"(lease_ttl_s {node_settings(redis, hardhat, tmp_path)['bus']['lease_ttl_s']})")
            await control.wait_for_event(name, final(opened[2]), timeout=60)
            await control.wait_for_offset(prices, price_before[1] + 1)

            edge1.kill()
            opened.append(await open_long(hardhat, trader))  # while the moving client has no edge
            await hardhat.node.mine(2)
            await control.wait_for_event(name, final(opened[3]))
            moving.base = edge2.ws("")
            nursery.start_soon(moving.connected_for, math.inf)
            await moving.wait_for_event(name, final(opened[3]))
            await moving.wait_until(lambda: len(moving.recovered) == 2 * len(streams))  # both streams resumed
            nursery.cancel_scope.cancel()

        story = [(e["type"], e["position_id"], e["finality"]) for e in control.events[name]]
        # Each copy once; pending copies in chain order, final ones too, each after its pending one (a core
        # catching up delivers the pending copies of a range before the final copies of its deep blocks).
        assert sorted(story) == sorted(("position_opened", p, f) for p in opened for f in ("pending", "final"))
        for finality in ("pending", "final"):
            assert [p for _, p, f in story if f == finality] == opened, story
        assert all(story.index(("position_opened", p, "pending")) < story.index(("position_opened", p, "final"))
                   for p in opened)
        assert control.closes == [] and control.repeats == []  # one connection all along, offsets increasing
        assert {frame["epoch"] for frame in control.frames[prices].values()} == {price_before[0]}
        assert moving.recovered[-2:] == [True, True] and moving.repeats == []
        assert moving.events[name] == control.events[name]  # the same frames: offsets, epoch, ts
        for node in (second, edge2):
            errors = [e for e in node.log_entries() if e.get("level") in ("error", "critical")]
            assert not errors, errors
    finally:
        for node in nodes.values():
            node.ensure_stopped()
