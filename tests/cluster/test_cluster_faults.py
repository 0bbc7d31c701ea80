"""Redis restarted under a deployment: with its data, then empty.

Clients stay connected to their edge: they see a pause, not a close, and
offsets go on in the same epoch; a client that was away meanwhile resumes
from the history in Redis (or, if Redis came back empty, is told
``recovered: false`` and gets a snapshot). The active core killed with
``-9`` is in tests/chain/test_cluster_on_chain_e2e.py, where both cores
index one real chain.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio

from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.resuming import ResumingClient

from .cluster import cluster_settings, start_node, wait_ready
from .redis_server import RedisServer
from .test_cluster_e2e import an_account, streams_of, until_both_reach

pytestmark = pytest.mark.e2e


async def test_redis_restarted_with_its_data_then_empty_clients_stay_and_resumes_say_what_they_got(
    tmp_path: Path, redis: RedisServer,
) -> None:
    settings = cluster_settings(redis, tmp_path / "data")
    nodes: list[DaemonProcess] = []
    try:
        nodes.append(await start_node(tmp_path / "core", settings, "core"))
        edge = await start_node(tmp_path / "edge", settings, "edge")
        nodes.append(edge)
        await wait_ready(edge)
        account = await an_account(redis)
        streams = {n: s for n, s in streams_of(account).items() if n.startswith("positions")}
        [name] = streams
        stayer, leaver = ResumingClient(edge.ws(""), streams), ResumingClient(edge.ws(""), streams)
        async with trio.open_nursery() as nursery:

            async def leaver_connected(scope: trio.CancelScope) -> None:
                with scope:
                    await leaver.connected_for(math.inf)

            nursery.start_soon(stayer.connected_for, math.inf)
            leaver_scope = trio.CancelScope()
            nursery.start_soon(leaver_connected, leaver_scope)
            for keeps_its_data in (True, False):
                await until_both_reach(stayer, leaver, name, events=1)
                leaver_scope.cancel()  # the leaver goes away
                redis.persistent = keeps_its_data  # off: it starts without its append-only file
                await redis.restart(down_s=1.0)
                seen = len(stayer.events.get(name, []))
                epochs = {f["epoch"] for f in stayer.frames[name].values()}
                with trio.fail_after(60):  # events after Redis is back reach the one who stayed ...
                    while len(stayer.events.get(name, [])) < seen + 2:
                        await trio.sleep(0.1)
                if not keeps_its_data:  # ... and after it came back empty, in a new epoch
                    await stayer.wait_until(lambda: {f["epoch"] for f in stayer.frames[name].values()} != epochs,
                                            timeout=60)
                leaver_scope = trio.CancelScope()
                nursery.start_soon(leaver_connected, leaver_scope)  # and comes back, resuming
                await until_both_reach(stayer, leaver, name, events=0)
                if keeps_its_data:
                    assert leaver.recovered == [None, True]
                    first = max(min(stayer.frames[name]), min(leaver.frames[name]))
                    last = min(stayer.positions[name][1], leaver.positions[name][1])
                    assert [e for e in leaver.events[name] if first < e["offset"] <= last] == \
                        [e for e in stayer.events[name] if first < e["offset"] <= last]
            nursery.cancel_scope.cancel()
        assert stayer.closes == [] and stayer.recovered == [None]  # one connection through both restarts
        # Redis came back empty: its history was lost, and a new epoch says so.
        assert leaver.recovered == [None, True, False]
        assert len({f["epoch"] for f in stayer.frames[name].values()}) == 2
        assert stayer.repeats == [] and leaver.repeats == []
    finally:
        for node in nodes:
            node.ensure_stopped()
