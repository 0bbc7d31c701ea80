"""Defect 1 end to end on Hardhat's node: a restart followed by a reorg below the cursor.

Snapshot at head H, mine an empty block, open an ETH position (H+2), let the
daemon index it, restart the daemon, revert to H, then on the new branch
open a BTC position at H+1 and an ETH one at H+2. Both new positions must be
served (REST, the owner's positions_update, open interest), the old one
gone — also once they are final. It needs both sides of the delivery rule:
the index's seqs and the markets applying every delivery after their
snapshot's ``delivered_through``, whatever its height.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from perpstream.chain.store import PositionStore
from perpstream.sources import index_path
from tests.reliability.clients import RunningDaemon, daemon_with

from .conftest import OnNode
from .helpers import BTC, ETH, d
from .node_daemon import node_config, wait_readiness

pytestmark = pytest.mark.e2e


async def served_positions(daemon: RunningDaemon) -> dict[str, dict[str, Any]]:
    body = (await daemon.get("/api/v1/positions?limit=1000")).json()
    return {p["position_id"]: p for p in body["positions"]}


async def wait_served(daemon: RunningDaemon, wanted: set[str], index: Path, *,
                      timeout: float = 15.0) -> dict[str, Any]:
    with trio.move_on_after(timeout):
        while set(served := await served_positions(daemon)) != wanted:
            await trio.sleep(0.05)
        return served
    reader = PositionStore(index)
    indexed = sorted(p.position_id for p in reader.open_positions())
    reader.close()
    raise AssertionError(f"REST serves {sorted(await served_positions(daemon))}; the chain has {sorted(wanted)}, "
                         f"the index {indexed}")


async def open_long(hardhat: OnNode, trader: int, market: str, size: str) -> str:
    exchange = hardhat.exchange
    receipt = await exchange.open_position(exchange.traders[trader], market, is_long=True, size=d(size),
                                           collateral=d("100"), entry_price=d("100"))
    return receipt.opened_position_ids[0]


async def test_a_restart_then_a_reorg_below_the_cursor_loses_no_position(hardhat: OnNode, tmp_path: Path) -> None:
    node, exchange = hardhat.node, hardhat.exchange
    config = node_config(tmp_path, node.url, hardhat.address)
    fork = await node.snapshot()
    head = await node.head()
    await node.mine(1)
    old_eth = await open_long(hardhat, 0, ETH, "1")
    async with daemon_with(config) as daemon:
        await wait_served(daemon, {old_eth}, index_path(config))

    async with daemon_with(config) as daemon, trio.open_nursery() as clients:  # the restarted daemon
        await wait_readiness(daemon, ready=True)
        btc_owner = exchange.traders[1]
        positions = await daemon.listen(clients, f"/api/v1/ws/positions/{btc_owner}")
        stats = await daemon.listen(clients, f"/api/v1/ws/market-stats/{BTC}")
        await positions.next("positions_update")
        assert await node.revert(fork)
        new_btc = await open_long(hardhat, 1, BTC, "2")
        new_eth = await open_long(hardhat, 2, ETH, "3")
        assert await node.head() == head + 2  # BTC at H+1, below the restarted daemon's cursor

        served = await wait_served(daemon, {new_btc, new_eth}, index_path(config))
        assert Decimal(served[new_btc]["size"]) == Decimal("2")
        update = await positions.wait_until(
            lambda m: m["type"] == "positions_update" and any(p["position_id"] == new_btc for p in m["positions"]))
        assert update["positions"][0]["position_id"] == new_btc
        oi = await stats.wait_until(lambda m: m["type"] == "market_stats" and Decimal(m["long_open_interest"]) > 0)
        assert Decimal(oi["long_open_interest"]) == Decimal("2")

        await node.mine(4)  # final now: still there
        await wait_readiness(daemon, ready=True)
        assert set(await served_positions(daemon)) == {new_btc, new_eth}
        on_chain = {p.position_id for p in await exchange.open_positions_view()}
        assert on_chain == {new_btc, new_eth}
        clients.cancel_scope.cancel()
