"""The indexer against Hardhat's node: a real, independent Ethereum node over JSON-RPC."""

from __future__ import annotations

from pathlib import Path

from perpstream.chain.indexer import Indexer
from perpstream.chain.jsonrpc import JsonRpcChainClient
from perpstream.chain.store import IndexerStore

from .conftest import OnNode
from .helpers import BTC, ETH, Recorder, assert_store_matches_contract, d, poll_until_caught_up


async def test_trades_are_indexed_pending_then_final(hardhat: OnNode, db_path: Path) -> None:
    exchange = hardhat.exchange
    opened = await exchange.open_position(exchange.traders[0], BTC, is_long=True, size=d("1.5"),
                                          collateral=d("100"), entry_price=d("50000"))
    position_id = opened.opened_position_ids[0]
    await exchange.open_position(exchange.traders[1], ETH, is_long=False, size=d("3"),
                                 collateral=d("50"), entry_price=d("3000"))
    sink = Recorder()
    async with JsonRpcChainClient(hardhat.node.url) as client:
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=sink, confirmations=3)
        await poll_until_caught_up(indexer)
        store = indexer.positions()
        await assert_store_matches_contract(exchange, store)
        assert {p.finality for p in store.open_positions()} == {"pending"}
        await hardhat.node.mine(3)
        await poll_until_caught_up(indexer)
    assert [type(e).__name__ for e in sink.events("final")] == ["PositionOpened", "PositionOpened"]
    position = next(p for p in store.open_positions() if p.position_id == position_id)
    assert position.finality == "final" and position.last_event == opened.events[0].meta
    assert [d.seq for d in sink.deliveries] == sorted({d.seq for d in sink.deliveries})
