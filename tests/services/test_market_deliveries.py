"""Chain deliveries applied by identity (outbox seq), and their finality copies, on the pure core."""

from __future__ import annotations

from decimal import Decimal

from perpstream.chain.events import Cursor
from perpstream.chain.store import StoreSnapshot
from perpstream.services.store import MemoryPositionStore
from tests.services.builders import (
    ALICE,
    BTC,
    ETH,
    T0_MS,
    closed,
    core,
    delivery,
    liquidated,
    meta,
    modified,
    opened,
    pid,
    price,
    stored,
)


def _snapshot_after(store: MemoryPositionStore, market_id: str) -> StoreSnapshot:
    return store.snapshot(market_id)


def test_a_restart_then_a_reorg_below_the_old_cursor_keeps_the_new_branch() -> None:
    # Snapshot at head H = 100 after: an empty block 101, an ETH position opened at 102 (seq 1).
    store = MemoryPositionStore()
    store.put(stored(1, market_id=ETH, last_event=meta(102)))
    store.cursor = Cursor(102, meta(102).block_hash)
    store.delivered_through = 1
    btc, eth = core(BTC, store.snapshot(BTC)), core(ETH, store.snapshot(ETH))
    # After the restart the chain reverts to H and the new branch has BTC at 101 and ETH at 102.
    deliveries = [
        (ETH, delivery(opened(1, meta(102), market_id=ETH), "reverted", 2, restored=None,
                       before=None)),
        (BTC, delivery(opened(2, meta(101, branch="b")), "pending", 3)),
        (ETH, delivery(opened(3, meta(102, branch="b"), market_id=ETH), "pending", 4)),
    ]
    for market_id, indexed in deliveries:
        (btc if market_id == BTC else eth).on_delivery(indexed, T0_MS)
    assert [p.position_id for p in btc.book] == [pid(2)]
    assert btc.book.open_interest.long == Decimal(1)
    assert [p.position_id for p in eth.book] == [pid(3)]
    [(account, view)] = btc.positions(T0_MS)
    assert account == ALICE and view.finality == "pending" and view.last_event.block_number == 101


def test_a_reverted_event_above_the_new_branch_does_not_hide_it() -> None:
    store = MemoryPositionStore()
    store.put(stored(1, last_event=meta(12)))
    store.cursor = Cursor(12, meta(12).block_hash)
    store.delivered_through = 5
    market = core(BTC, store.snapshot(BTC))
    market.on_delivery(delivery(opened(2, meta(13)), "pending", 6), T0_MS)
    market.on_delivery(delivery(opened(2, meta(13)), "reverted", 7), T0_MS)
    market.on_delivery(delivery(opened(1, meta(12)), "reverted", 8), T0_MS)
    market.on_delivery(delivery(opened(4, meta(11, branch="b")), "pending", 9), T0_MS)
    market.on_delivery(delivery(opened(5, meta(12, branch="b")), "pending", 10), T0_MS)
    assert sorted(p.position_id for p in market.book) == [pid(4), pid(5)]


def test_deliveries_the_snapshot_reflects_or_already_applied_are_skipped() -> None:
    store = MemoryPositionStore()
    store.put(stored(1, last_event=meta(10)))
    store.delivered_through = 3
    market = core(BTC, store.snapshot(BTC))
    # The tail a crash left undelivered comes again with its old seqs: one in the snapshot (and told)...
    effects = market.on_delivery(delivery(opened(1, meta(10)), "pending", 3), T0_MS, told=True)
    assert effects.user_events == [] and len(market.book) == 1
    # ...then a new one, applied once even when delivered twice.
    for _ in range(2):
        market.on_delivery(delivery(modified(1, meta(11), size="2"), "pending", 4,
                                    before=stored(1, last_event=meta(10))), T0_MS)
    assert market.book.get(pid(1)).size == Decimal(2)
    assert market.volume_total == Decimal(65000)
    assert market.delivered_through == 4


def test_deliveries_stored_but_never_published_are_published_after_a_restart_without_applying_them_again() -> None:
    # The daemon stored seqs 3 and 4 but was killed before their messages
    # reached the stream history (which has everything through seq 2).
    store = MemoryPositionStore()
    store.put(stored(1, size="2", last_event=meta(11)))
    store.delivered_through = 4
    market = core(BTC, store.snapshot(BTC))
    redelivered = [
        delivery(opened(1, meta(10)), "pending", 3, before=None),
        delivery(modified(1, meta(11), size="2"), "pending", 4, before=stored(1, last_event=meta(10))),
    ]
    messages = [m for d in redelivered for _, m in market.on_delivery(d, T0_MS).user_events]
    assert [(m.type, m.event.block_number, m.finality) for m in messages] == [
        ("position_opened", 10, "pending"), ("position_modified", 11, "pending")]
    assert market.book.get(pid(1)).size == Decimal(2) and market.volume_total == 0  # not applied twice
    # Once told (another crash before the acknowledgement), a further redelivery is not published again.
    assert market.on_delivery(redelivered[1], T0_MS, told=True).user_events == []


def test_a_delivery_clients_were_told_of_is_applied_without_a_message() -> None:
    # A core taking over indexes the chain itself: what another core published
    # comes as new deliveries, which the state needs and clients have had.
    market = core(BTC)
    market.on_price(price("50000"), T0_MS)
    steps = [delivery(opened(1, meta(10)), "pending", 1, before=None),
             delivery(liquidated(1, meta(11)), "pending", 2, before=stored(1, last_event=meta(10)))]
    told = [market.on_delivery(steps[0], T0_MS, told=True)]
    assert len(market.book) == 1 and market.volume_total > 0
    told.append(market.on_delivery(steps[1], T0_MS, told=True))
    assert len(market.book) == 0
    assert all(e.user_events == [] and e.liquidation_events == [] and e.stats_events == [] for e in told)
    untold = core(BTC)
    untold.on_price(price("50000"), T0_MS)
    effects = [untold.on_delivery(step, T0_MS) for step in steps]
    assert [m.type for e in effects for _, m in e.user_events] == ["position_opened", "position_liquidated"]
    assert [e.kind for e in effects[1].liquidation_events] == ["liquidated"]


def _finality_story() -> tuple[list[dict], object]:
    """Open, modify, close within the window, then the three final copies (as the store sends them)."""
    market = core(BTC)
    after_open = stored(1, last_event=meta(10))
    after_modify = stored(1, size="2", last_event=meta(11))
    steps = [
        delivery(opened(1, meta(10)), "pending", 1, before=None),
        delivery(modified(1, meta(11), size="2"), "pending", 2, before=after_open),
        delivery(closed(1, meta(12)), "pending", 3, before=after_modify),
        delivery(opened(1, meta(10)), "final", 4, before=None),
        delivery(modified(1, meta(11), size="2"), "final", 5, before=after_open),
        delivery(closed(1, meta(12)), "final", 6, before=after_modify),
    ]
    messages = []
    for indexed in steps:
        for account, message in market.on_delivery(indexed, T0_MS).user_events:
            assert account == ALICE
            messages.append({"type": message.type, "finality": message.finality, "side": message.side,
                             "size": message.size})
    return messages, market


def test_every_event_gets_its_final_copy_with_side_and_size_even_after_a_close() -> None:
    messages, _ = _finality_story()
    assert messages == [
        {"type": "position_opened", "finality": "pending", "side": "long", "size": Decimal(1)},
        {"type": "position_modified", "finality": "pending", "side": "long", "size": Decimal(2)},
        {"type": "position_closed", "finality": "pending", "side": "long", "size": Decimal(2)},
        {"type": "position_opened", "finality": "final", "side": "long", "size": Decimal(1)},
        {"type": "position_modified", "finality": "final", "side": "long", "size": Decimal(2)},
        {"type": "position_closed", "finality": "final", "side": "long", "size": Decimal(2)},
    ]


def test_a_modification_of_another_markets_position_is_not_this_markets() -> None:
    market = core(ETH)
    effects = market.on_delivery(delivery(modified(1, meta(11), size="2"), "final", 5,
                                          before=stored(1, market_id=BTC)), T0_MS)
    assert effects.user_events == []


def test_positions_carry_their_last_event_and_its_finality() -> None:
    store = MemoryPositionStore()
    store.put(stored(1, last_event=meta(9), finality="final"))
    store.delivered_through = 1
    market = core(BTC, store.snapshot(BTC))
    market.on_price(price("65000"), T0_MS)
    [view] = market.positions_of(ALICE, T0_MS)
    assert (view.last_event.block_number, view.finality) == (9, "final")
    market.on_delivery(delivery(modified(1, meta(10), size="2"), "pending", 2,
                                before=stored(1, last_event=meta(9), finality="final")), T0_MS)
    [view] = market.positions_of(ALICE, T0_MS)
    assert view.last_event.tx_hash == meta(10).tx_hash and view.last_event.log_index == 0
    assert view.finality == "pending"
    # A final copy of an older event does not settle a newer state...
    market.on_delivery(delivery(opened(1, meta(9)), "final", 3), T0_MS)
    assert market.positions_of(ALICE, T0_MS)[0].finality == "pending"
    # ...the final copy of the newest one does.
    market.on_delivery(delivery(modified(1, meta(10), size="2"), "final", 4,
                                before=stored(1, last_event=meta(9), finality="final")), T0_MS)
    [view] = market.positions_of(ALICE, T0_MS)
    assert (view.finality, view.last_event.block_hash) == ("final", meta(10).block_hash)
