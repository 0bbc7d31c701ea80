"""Resuming the positions stream across a daemon restart, on Hardhat's node.

The daemon (``perpstream serve``, a process of its own) indexes a real node.
Two clients watch one account: A until the daemon stops, B leaves earlier.
Positions open and become final while B is away and while the daemon is
down (stopped with SIGTERM, or killed with ``kill -9``); after the restart
on the same ``data_dir`` both resume with ``?epoch=&offset=``, both are told
``recovered: true`` (the chain-derived streams keep their epoch), and both
end with the same events: every pending and final copy, once, in order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.resuming import ResumingClient

from .conftest import OnNode
from .helpers import BTC, d

pytestmark = pytest.mark.e2e


def on_node(hardhat: OnNode) -> dict[str, Any]:
    """The ``[chain]`` section of a daemon indexing Hardhat's node, quickly."""
    return {"source": "rpc", "rpc_url": hardhat.node.url, "contract_address": hardhat.address,
            "confirmations": 2, "poll_interval_ms": 50, "rpc_timeout_s": 5.0}


def settings(tmp_path: Path, hardhat: OnNode) -> dict[str, Any]:
    return {
        "server": {"data_dir": str(tmp_path / "data")},
        "chain": on_node(hardhat),
        "streams": {"positions_interval_ms": 250},
    }


async def open_long(hardhat: OnNode, trader: str) -> str:
    receipt = await hardhat.exchange.open_position(trader, BTC, is_long=True, size=d("1"), collateral=d("100"),
                                                   entry_price=d("100"))
    return receipt.opened_position_ids[0]


def final(position_id: str) -> Any:
    return lambda e: e["position_id"] == position_id and e["finality"] == "final"


# kill -9 is the harder case (nothing flushed, no goodbye); the graceful stop is the long variant.
@pytest.mark.parametrize("stop", [pytest.param("sigterm", marks=pytest.mark.slow), "kill -9"])
async def test_both_clients_recover_every_event_across_a_restart(hardhat: OnNode, tmp_path: Path, stop: str) -> None:
    trader = hardhat.exchange.traders[0]
    name = f"positions:{trader}"
    daemon = DaemonProcess(tmp_path, settings(tmp_path, hardhat))
    streams = {name: {"path": f"/api/v1/ws/positions/{trader}"}}
    a, b = ResumingClient(daemon.ws(""), streams), ResumingClient(daemon.ws(""), streams)
    opened = []
    try:
        await daemon.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.connected_for, math.inf)  # until the daemon goes
            b_away = trio.CancelScope()
            nursery.start_soon(_until_cancelled, b, b_away)
            opened.append(await open_long(hardhat, trader))
            await hardhat.node.mine(2)
            await b.wait_for_event(name, final(opened[0]))
            b_away.cancel()  # B leaves
            opened.append(await open_long(hardhat, trader))
            await hardhat.node.mine(2)
            await a.wait_for_event(name, final(opened[1]))
            if stop == "sigterm":
                assert await daemon.stop() == 0
            else:
                daemon.kill()
        opened.append(await open_long(hardhat, trader))  # while the daemon is down
        await hardhat.node.mine(3)

        await daemon.start()
        async with trio.open_nursery() as nursery:
            for client in (a, b):
                nursery.start_soon(client.connected_for, math.inf)
            for client in (a, b):
                await client.wait_for_event(name, final(opened[2]))
            nursery.cancel_scope.cancel()
        assert await daemon.stop() == 0
    finally:
        daemon.ensure_stopped()

    assert a.recovered == [None, True] and b.recovered == [None, True]
    assert a.repeats == [] and b.repeats == []
    story = [(e["type"], e["position_id"], e["finality"]) for e in a.events[name]]
    assert story == [("position_opened", p, f) for p in opened for f in ("pending", "final")]
    assert b.events[name] == a.events[name]  # the same frames: same offsets, same epoch, same ts
    errors = [e for e in daemon.log_entries() if e.get("level") in ("error", "critical")]
    assert not errors, errors


async def _until_cancelled(client: ResumingClient, scope: trio.CancelScope) -> None:
    with scope:
        await client.connected_for(math.inf)
