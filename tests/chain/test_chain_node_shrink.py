"""A chain that shrinks or is reset under the indexer, on Hardhat's node (defects 4 and 5).

Hardhat keeps its genesis hash across ``hardhat_reset``, so only the stored
hashes of the indexed blocks can tell the chain is another one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from perpstream.chain.indexer import Indexer
from perpstream.chain.jsonrpc import JsonRpcChainClient
from perpstream.chain.store import IndexerStore

from .conftest import OnNode
from .hardhat_node import deploy_exchange
from .helpers import BTC, ETH, Recorder, d, poll_until_caught_up
from .waiting import wait_until


async def trade(hardhat: OnNode, trader: int, market: str) -> None:
    exchange = hardhat.exchange
    await exchange.open_position(exchange.traders[trader], market, is_long=True, size=d("1"),
                                 collateral=d("100"), entry_price=d("100"))


@asynccontextmanager
async def running(indexer: Indexer) -> AsyncIterator[Indexer]:
    async with trio.open_nursery() as nursery:
        await nursery.start(indexer.run)
        yield indexer
        nursery.cancel_scope.cancel()


async def test_a_shorter_chain_is_rolled_back_after_the_grace(hardhat: OnNode, db_path: Path) -> None:
    node = hardhat.node
    fork = await node.snapshot()
    await trade(hardhat, 0, BTC)
    await trade(hardhat, 1, ETH)
    await node.mine(1)
    sink = Recorder()
    async with JsonRpcChainClient(node.url) as client:
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=sink,
                          confirmations=6, shrink_grace_s=0.5)
        await poll_until_caught_up(indexer)
        cursor = indexer.status.indexed_block
        assert len(indexer.positions().open_positions()) == 2
        assert await node.revert(fork)  # the chain is now 3 blocks shorter, same blocks below
        outcome = await indexer.poll_once()
        # at once: behind, honestly (a lagging node looks the same for a while)
        assert outcome.caught_up and indexer.status.reorgs == 0
        assert indexer.status.lag == await node.head() - cursor < 0
        with trio.fail_after(10):
            while indexer.status.reorgs == 0:
                await indexer.poll_once()
                await trio.sleep(0.05)
    assert indexer.positions().open_positions() == []
    assert [x.finality for x in sink.deliveries[-2:]] == ["reverted", "reverted"]
    assert indexer.status.lag == 0


async def test_a_reset_chain_stops_the_indexer_with_the_way_out(hardhat: OnNode, db_path: Path) -> None:
    node = hardhat.node
    await trade(hardhat, 0, BTC)
    await node.mine(20)
    async with JsonRpcChainClient(node.url) as client:
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=Recorder(),
                          confirmations=3, poll_interval_s=0.05, shrink_grace_s=0.5)
        await poll_until_caught_up(indexer)
        await node.reset()
        await trio.to_thread.run_sync(deploy_exchange, node)  # same address, same genesis hash
        # One poll by hand, so the grace starts now (not while the deploy ran):
        # behind, not yet stopped.
        assert (await indexer.poll_once()).caught_up
        assert (indexer.status.lag or 0) < 0 and indexer.status.halted is None
        async with running(indexer):
            await wait_until(lambda: indexer.status.halted is not None, what="the indexer to stop")
    assert indexer.status.halted.startswith("ChainResetError")
    assert "perpstream reindex" in indexer.status.halted and "perpstream reindex" in (indexer.status.remedy or "")


async def test_a_reset_chain_grown_past_the_cursor_is_a_reorg_too_deep(hardhat: OnNode, db_path: Path) -> None:
    node = hardhat.node
    await trade(hardhat, 0, BTC)
    await node.mine(5)
    async with JsonRpcChainClient(node.url) as client:
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=Recorder(),
                          confirmations=3, poll_interval_s=0.05)
        await poll_until_caught_up(indexer)
        await node.reset()
        await trio.to_thread.run_sync(deploy_exchange, node)
        await node.mine(20)
        async with running(indexer):
            await wait_until(lambda: indexer.status.halted is not None, what="the indexer to stop")
    assert indexer.status.halted.startswith("ReorgTooDeepError")
    assert "perpstream reindex" in (indexer.status.remedy or "")
