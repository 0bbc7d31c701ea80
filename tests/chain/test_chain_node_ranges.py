"""Real providers' eth_getLogs limits, end to end: Hardhat's node behind a proxy that
refuses spans in each provider's own words (defect: they were read as fatal, or retried
on the same span for ever, and the daemon exited)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from perpstream.devchain import OpenOrder
from perpstream.chain.indexer import Indexer
from perpstream.chain.jsonrpc import JsonRpcChainClient
from perpstream.chain.store import IndexerStore

from .conftest import OnNode
from .helpers import BTC, ETH, Recorder, assert_store_matches_contract, d, poll_until_caught_up
from .range_proxy import Provider, RangeLimitProxy, reth_max_results, span_providers
from .waiting import wait_until

LIMIT = 20


@asynccontextmanager
async def proxied(hardhat: OnNode, provider: Provider) -> AsyncIterator[RangeLimitProxy]:
    proxy = RangeLimitProxy(hardhat.node.url, provider)
    async with trio.open_nursery() as nursery:
        await proxy.up(nursery)
        try:
            yield proxy
        finally:
            proxy.down()
            await proxy.aclose()


async def spread_trades(hardhat: OnNode, blocks_between: int) -> int:
    """Four trades with ``blocks_between`` empty blocks after each; returns the events."""
    exchange = hardhat.exchange
    for i, market in enumerate((BTC, ETH, BTC, ETH)):
        await exchange.open_position(exchange.traders[i], market, is_long=i % 2 == 0, size=d(f"1.{i}"),
                                     collateral=d("100"), entry_price=d("100"))
        await hardhat.node.mine(blocks_between)
    return 4


@pytest.mark.parametrize("provider", span_providers(LIMIT), ids=lambda p: p.name)
async def test_indexer_follows_each_providers_span_limit(hardhat: OnNode, db_path: Path, provider: Provider) -> None:
    events = await spread_trades(hardhat, 30)
    sink = Recorder()
    async with proxied(hardhat, provider) as proxy, JsonRpcChainClient(proxy.url) as client:
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=sink,
                          confirmations=3, max_block_range=2000)
        await poll_until_caught_up(indexer)
        await assert_store_matches_contract(hardhat.exchange, indexer.positions())
    assert len(sink.events("pending")) == events
    refusals = [call for call in proxy.get_logs if call[2]]
    served = [last - first + 1 for first, last, refused in proxy.get_logs if not refused]
    assert max(served) <= LIMIT
    if provider.name == "scroll-geth":  # says no number: the span halves down to what works
        assert 1 <= len(refusals) <= 10 and indexer.status.block_range == LIMIT
    else:  # the provider said what works: one refusal, then exactly that, never more
        assert len(refusals) == 1
        assert max(served) == LIMIT and indexer.status.block_range == LIMIT


async def test_reth_result_cap_takes_the_suggested_range(hardhat: OnNode, db_path: Path) -> None:
    exchange = hardhat.exchange
    for i in range(4):  # 4 blocks of 3 events, then some empty ones
        orders = [OpenOrder(BTC, j % 2 == 0, d(f"1.{i}{j}"), d("10"), d("100")) for j in range(3)]
        await exchange.open_positions(exchange.traders[i], orders)
    await hardhat.node.mine(10)
    sink = Recorder()
    async with proxied(hardhat, reth_max_results(7)) as proxy, JsonRpcChainClient(proxy.url) as client:
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=sink,
                          confirmations=3, max_block_range=2000)
        await poll_until_caught_up(indexer)
        await assert_store_matches_contract(exchange, indexer.positions())
    assert len(sink.events("pending")) == 12
    first_refusal = next(i for i, call in enumerate(proxy.get_logs) if call[2])
    refused_first = proxy.get_logs[first_refusal][0]
    # the retry asks for exactly the range reth named: the blocks up to the one that would overflow
    assert proxy.get_logs[first_refusal + 1][0] == refused_first
    assert not proxy.get_logs[first_refusal + 1][2]


async def test_one_block_over_the_cap_stops_the_indexer_naming_the_block(hardhat: OnNode, db_path: Path) -> None:
    exchange = hardhat.exchange
    orders = [OpenOrder(BTC, True, d("1"), d("10"), d("100")) for _ in range(5)]
    receipt = await exchange.open_positions(exchange.traders[0], orders)
    async with proxied(hardhat, reth_max_results(3)) as proxy, JsonRpcChainClient(proxy.url) as client:
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=Recorder(),
                          confirmations=3, poll_interval_s=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(indexer.run)
            await wait_until(lambda: indexer.status.halted is not None, what="the indexer to stop")
            nursery.cancel_scope.cancel()
    assert proxy.get_logs[-1][:2] == (receipt.block_number, receipt.block_number)
    assert f"block {receipt.block_number} alone has more logs" in indexer.status.halted
    assert "more logs per eth_getLogs" in (indexer.status.remedy or "")
