"""Deliveries through a restart and a reorg on Hardhat's node (defect 1, store side).

A consumer rebuilds from a snapshot and then applies exactly the deliveries
with ``seq > snapshot.delivered_through``: these tests check that rule sees
every change of the new branch, whatever the heights, and that ``before``,
``seq`` and ``finality`` are right on every delivery.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from perpstream.chain.events import IndexedEvent, PositionOpened, StoredPosition
from perpstream.chain.indexer import Indexer
from perpstream.chain.jsonrpc import JsonRpcChainClient
from perpstream.chain.state import next_record
from perpstream.chain.store import IndexerStore, StoreSnapshot

from .conftest import OnNode
from .helpers import BTC, ETH, Recorder, assert_store_matches_contract, d, poll_until_caught_up


def replay(snapshot: StoreSnapshot, deliveries: list[IndexedEvent]) -> dict[str, StoredPosition]:
    """What a consumer holds: the snapshot, then every delivery after it, by seq alone."""
    positions = {p.position_id: p for p in snapshot.positions}
    for delivery in deliveries:
        if delivery.seq <= snapshot.delivered_through or delivery.finality == "final":
            continue
        position_id = getattr(delivery.event, "position_id", None)
        if position_id is None:
            continue
        record = delivery.restored if delivery.finality == "reverted" else _after(delivery)
        if record is None:
            positions.pop(position_id, None)
        else:
            positions[position_id] = record  # type: ignore[assignment]
    return positions


def _after(delivery: IndexedEvent) -> StoredPosition | None:
    record = next_record(delivery.event, delivery.before)
    if not isinstance(record, StoredPosition):
        return None
    return attrs.evolve(record, last_event=delivery.event.meta, finality="pending")


async def open_at(hardhat: OnNode, trader: int, market: str, size: str) -> PositionOpened:
    exchange = hardhat.exchange
    receipt = await exchange.open_position(exchange.traders[trader], market, is_long=True, size=d(size),
                                           collateral=d("100"), entry_price=d("100"))
    event = receipt.events[0]
    assert isinstance(event, PositionOpened)
    return event


async def test_restart_then_reorg_below_the_cursor_delivers_the_new_branch(hardhat: OnNode, db_path: Path) -> None:
    node = hardhat.node
    fork = await node.snapshot()
    await node.mine(1)
    old_eth = await open_at(hardhat, 0, ETH, "1")  # H+2
    first_sink = Recorder()
    async with JsonRpcChainClient(node.url) as client:
        store = IndexerStore(db_path)
        indexer = Indexer(client, store, address=hardhat.address, on_event=first_sink, confirmations=3)
        await poll_until_caught_up(indexer)
        store.close()
    seqs = [x.seq for x in first_sink.deliveries]
    assert seqs == sorted(set(seqs)) and seqs[0] >= 1

    # the daemon restarts: a consumer rebuilds from this snapshot
    reader = indexer.positions()
    snapshot = reader.snapshot()
    assert snapshot.delivered_through == seqs[-1]
    assert [p.position_id for p in snapshot.positions] == [old_eth.position_id]

    assert await node.revert(fork)
    new_btc = await open_at(hardhat, 1, BTC, "2")  # H+1, below the old cursor
    new_eth = await open_at(hardhat, 2, ETH, "3")  # H+2, the old cursor's height
    await node.mine(1)
    sink = Recorder()
    async with JsonRpcChainClient(node.url) as client:
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=sink, confirmations=3)
        await poll_until_caught_up(indexer)
        changes = [(x.finality, x.event) for x in sink.deliveries if x.finality != "final"]
        assert changes == [("reverted", old_eth), ("pending", new_btc), ("pending", new_eth)]
        reverted = sink.deliveries[0]
        assert reverted.before is None and reverted.restored is None
        assert all(x.seq > snapshot.delivered_through for x in sink.deliveries)
        assert [x.seq for x in sink.deliveries] == sorted({x.seq for x in sink.deliveries})

        # the consumer's rule sees the new branch exactly as the index (and the contract) has it
        now = reader.snapshot()
        assert now.delivered_through == sink.deliveries[-1].seq
        assert replay(snapshot, sink.deliveries) == {p.position_id: p for p in now.positions}
        await assert_store_matches_contract(hardhat.exchange, reader)
        assert {p.position_id: (p.last_event, p.finality) for p in now.positions} == {
            new_btc.position_id: (new_btc.meta, "pending"), new_eth.position_id: (new_eth.meta, "pending")}

        await node.mine(3)
        await poll_until_caught_up(indexer)
    finals = [x for x in sink.deliveries if x.finality == "final"]
    assert [x.event for x in finals] == [new_btc, new_eth]
    assert [x.before for x in finals] == [None, None]
    assert {p.finality for p in reader.open_positions()} == {"final"}


async def test_every_delivery_carries_the_record_before_it(hardhat: OnNode, db_path: Path) -> None:
    exchange = hardhat.exchange
    trader = exchange.traders[0]
    opened = await open_at(hardhat, 0, BTC, "1")
    modified = (await exchange.modify_position(trader, opened.position_id, size=d("2"), collateral=d("150"),
                                               price=d("101"))).events[0]
    closed = (await exchange.close_position(trader, opened.position_id, exit_price=d("102"))).events[0]
    sink = Recorder()
    async with JsonRpcChainClient(hardhat.node.url) as client:
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=sink, confirmations=3)
        await poll_until_caught_up(indexer)
        await hardhat.node.mine(4)
        await poll_until_caught_up(indexer)
    by_event = {}
    for x in sink.deliveries:
        by_event.setdefault(x.event, {})[x.finality] = x
    assert set(by_event) == {opened, modified, closed}
    for copies in by_event.values():
        assert set(copies) == {"pending", "final"}  # the modification's final copy too
        assert copies["pending"].before == copies["final"].before
    assert by_event[opened]["final"].before is None
    before_close = by_event[closed]["final"].before
    assert isinstance(before_close, StoredPosition)
    assert (before_close.side, before_close.size) == ("long", d("2"))  # the closed position's side and size
    assert before_close.last_event == modified.meta


async def test_an_undelivered_tail_comes_again_with_the_same_seqs(hardhat: OnNode, db_path: Path) -> None:
    for i in range(3):
        await open_at(hardhat, i, BTC, f"1.{i}")
    delivered: list[IndexedEvent] = []

    async def failing_after_two(delivery: IndexedEvent) -> None:
        if len(delivered) == 2:
            raise ConnectionError("the consumer went away")
        delivered.append(delivery)

    async with JsonRpcChainClient(hardhat.node.url) as client:
        store = IndexerStore(db_path)
        indexer = Indexer(client, store, address=hardhat.address, on_event=failing_after_two, confirmations=3)
        try:
            await indexer.poll_once()
        except ConnectionError:
            pass
        store.close()
        sink = Recorder()
        indexer = Indexer(client, IndexerStore(db_path), address=hardhat.address, on_event=sink, confirmations=3)
        await poll_until_caught_up(indexer)
    again = sink.deliveries[:3]
    assert delivered == again[:2]  # same events, same seqs, same before
    assert [x.seq for x in sink.deliveries] == sorted({x.seq for x in sink.deliveries})
