"""The SQLite store on synthetic events: undo, finality, outbox, identity."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpstream.chain import (
    BlockHeader,
    ChainEvent,
    ChainIdentity,
    Cursor,
    EventMeta,
    FundingUpdated,
    IndexerStore,
    PositionClosed,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    PositionStore,
    StoreMismatchError,
)
from perpstream.chain.store import Batch, Outgoing

from .helpers import BTC, ETH

ALICE = "0x318b469BBa396AEc2C60342F9441be36A1945174"
IDENTITY = ChainIdentity(1, "0x" + "00" * 32, ALICE)


def block_hash(number: int) -> str:
    return f"0x{number:064x}"


def meta(block: int, index: int) -> EventMeta:
    return EventMeta(block, block_hash(block), f"0x{block * 1000 + index:064x}", index)


@st.composite
def histories(draw: st.DrawFn) -> list[ChainEvent]:
    """A valid event history: opens before modifies, nothing after a close."""
    events: list[ChainEvent] = []
    open_ids: list[tuple[str, str]] = []
    next_id = 0
    for block in range(1, draw(st.integers(2, 8)) + 1):
        for index in range(draw(st.integers(0, 4))):
            m = meta(block, index)
            amount = Decimal(draw(st.integers(1, 10**6))) / 1000
            kind = draw(st.sampled_from(["open", "modify", "close", "liquidate", "funding"]))
            if kind == "funding" or (kind != "open" and not open_ids):
                market = draw(st.sampled_from([BTC, ETH]))
                events.append(FundingUpdated(m, market, amount / 10**6, amount, block * 10))
            elif kind == "open":
                pid, market = f"0x{next_id:064x}", draw(st.sampled_from([BTC, ETH]))
                next_id += 1
                open_ids.append((pid, market))
                events.append(PositionOpened(m, pid, ALICE, market, draw(st.booleans()), amount, amount * 2,
                                             amount * 3, -amount))
            else:
                pid, market = open_ids[draw(st.integers(0, len(open_ids) - 1))]
                if kind == "modify":
                    events.append(PositionModified(m, pid, amount, amount + 1, amount + 2, amount))
                else:
                    open_ids.remove((pid, market))
                    if kind == "close":
                        events.append(PositionClosed(m, pid, ALICE, market, amount, -amount))
                    else:
                        events.append(PositionLiquidated(m, pid, ALICE, ALICE, market, amount, amount / 100))
    return events


def apply_blocks(
    store: IndexerStore, events: list[ChainEvent], first: int, last: int, *, final_upto: int
) -> list[Outgoing]:
    """Commit blocks ``first..last`` the way the indexer would."""
    remembered = range(max(first, final_upto), last + 1)
    batch = Batch(
        events=[e for e in events if first <= e.meta.block_number <= last],
        headers=[BlockHeader(n, block_hash(n), block_hash(n - 1), n) for n in remembered],
        cursor=Cursor(last, block_hash(last)),
        final_upto=final_upto,
    )
    return store.apply_batch(batch).outgoing


def state_of(path: Path) -> tuple:
    reader = PositionStore(path)
    try:
        snapshot = reader.snapshot()
        return snapshot.positions, snapshot.funding
    finally:
        reader.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.data())
def test_roll_back_restores_exactly_the_state_at_the_ancestor(
    events: list[ChainEvent], data: st.DataObject
) -> None:
    last_block = max([e.meta.block_number for e in events], default=1) + 1
    ancestor = data.draw(st.integers(0, last_block - 1), label="ancestor")
    split = data.draw(st.integers(1, last_block), label="split")
    with tempfile.TemporaryDirectory() as tmp:
        reorged, reference = Path(tmp, "a.sqlite3"), Path(tmp, "b.sqlite3")
        store = IndexerStore(reorged)
        # every block stays in the window: no finality
        apply_blocks(store, events, 1, split, final_upto=0)
        if split < last_block:
            apply_blocks(store, events, split + 1, last_block, final_upto=0)
        outgoing = store.roll_back(Cursor(ancestor, block_hash(ancestor)))
        assert store.cursor() == Cursor(ancestor, block_hash(ancestor))

        undone = [e for e in events if e.meta.block_number > ancestor]
        assert [o.delivery.event for o in outgoing] == undone[::-1]
        assert {o.delivery.finality for o in outgoing} <= {"reverted"}

        expected = IndexerStore(reference)
        apply_blocks(expected, events, 1, ancestor, final_upto=0)
        assert state_of(reorged) == state_of(reference)

        # and forward again along the same events: same as never having reorged
        apply_blocks(store, events, ancestor + 1, last_block, final_upto=0)
        apply_blocks(expected, events, ancestor + 1, last_block, final_upto=0)
        assert state_of(reorged) == state_of(reference)
        store.close()
        expected.close()


def test_events_turn_final_once_deep_enough(tmp_path: Path) -> None:
    store = IndexerStore(tmp_path / "s.sqlite3")
    events: list[ChainEvent] = [FundingUpdated(meta(b, 0), BTC, Decimal(b), Decimal(b), b) for b in (1, 2, 3)]
    out = apply_blocks(store, events, 1, 3, final_upto=1)
    assert [(o.delivery.finality, o.delivery.event.meta.block_number) for o in out] == [
        ("pending", 1), ("pending", 2), ("pending", 3), ("final", 1)
    ]
    out = apply_blocks(store, events, 4, 5, final_upto=3)
    assert [(o.delivery.finality, o.delivery.event.meta.block_number) for o in out] == [
        ("final", 2), ("final", 3)
    ]
    # final blocks are forgotten except the newest one, the anchor a reorg walk can stop at
    assert sorted(store.remembered_blocks()) == [3, 4, 5]
    assert state_of(tmp_path / "s.sqlite3")[1][0].funding_index == Decimal(3)


def test_outbox_keeps_deliveries_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = IndexerStore(path)
    events: list[ChainEvent] = [FundingUpdated(meta(1, i), BTC, Decimal(i), Decimal(i), 1) for i in range(3)]
    out = apply_blocks(store, events, 1, 1, final_upto=0)
    store.close()

    reopened = IndexerStore(path)  # as after a crash before delivery
    assert reopened.undelivered() == out
    reopened.acknowledge(out[1].seq)
    assert reopened.undelivered() == out[2:]


def test_inconsistent_event_is_counted_and_leaves_state_alone(tmp_path: Path) -> None:
    store = IndexerStore(tmp_path / "s.sqlite3")
    stray = PositionModified(meta(1, 0), "0x" + "99" * 32, Decimal(1), Decimal(1), Decimal(1), Decimal(0))
    batch = Batch([stray], [], Cursor(1, block_hash(1)), final_upto=-5)
    applied = store.apply_batch(batch)
    assert applied.inconsistent == 1
    assert [o.delivery.finality for o in applied.outgoing] == ["pending"]
    assert state_of(tmp_path / "s.sqlite3") == ([], [])


def test_identity_binds_the_file_to_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = IndexerStore(path)
    assert store.check_identity(IDENTITY) is False
    apply_blocks(store, [FundingUpdated(meta(1, 0), BTC, Decimal(1), Decimal(1), 1)], 1, 1, final_upto=0)
    assert store.check_identity(IDENTITY) is False

    other = ChainIdentity(1, "0x" + "11" * 32, ALICE)
    with pytest.raises(StoreMismatchError):
        store.check_identity(other)
    assert store.cursor() is not None
    assert store.check_identity(other, reset_on_mismatch=True) is True
    assert store.cursor() is None
    assert state_of(path) == ([], [])


def test_position_store_filters_and_reads_exact_decimals(tmp_path: Path) -> None:
    store = IndexerStore(tmp_path / "s.sqlite3")
    bob = "0x" + "Ab" * 20
    events: list[ChainEvent] = [
        PositionOpened(meta(1, 0), "0x" + "01" * 32, ALICE, BTC, True, Decimal("0.000000000000000001"),
                       Decimal("1E+3"), Decimal("65012.34"), Decimal("-0.5")),
        PositionOpened(meta(2, 0), "0x" + "02" * 32, bob, ETH, False, Decimal(1), Decimal(1), Decimal(1),
                       Decimal(0)),
    ]
    apply_blocks(store, events, 1, 2, final_upto=0)
    reader = PositionStore(tmp_path / "s.sqlite3")
    (btc,) = reader.open_positions(BTC)
    assert btc.size == Decimal("1E-18") and btc.collateral == 1000 and btc.entry_price == Decimal("65012.34")
    assert [p.account for p in reader.open_positions()] == [ALICE, bob]
    assert [p.market_id for p in reader.open_positions(account=bob)] == [ETH]
    assert reader.cursor() == Cursor(2, block_hash(2))
    assert reader.funding(BTC) is None


def test_a_file_of_the_old_schema_names_the_way_out_and_reindex_rebuilds_it(tmp_path: Path) -> None:
    import sqlite3

    from perpstream.chain.store import StoreMismatchError
    from perpstream.cli import main

    data = tmp_path / "data"
    data.mkdir()
    old = sqlite3.connect(data / "chain-index.sqlite3")
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    old.commit()
    old.close()
    with pytest.raises(StoreMismatchError, match=r"index schema 1, this one reads 2.*perpstream reindex"):
        IndexerStore(data / "chain-index.sqlite3")
    config = tmp_path / "perpstream.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n[chain]\nsource = "rpc"\n'
                      f'rpc_url = "http://127.0.0.1:1/"\ncontract_address = "0x{"11" * 20}"\n')
    assert main(["reindex", "--config", str(config), "--from", "7"]) == 0
    store = IndexerStore(data / "chain-index.sqlite3")
    assert store.cursor() is None and store.start_block(0) == 7
    store.close()
    assert main(["reindex", "--config", str(config), "--from", "-1"]) == 1


def test_a_wipe_keeps_seqs_increasing(tmp_path: Path) -> None:
    store = IndexerStore(tmp_path / "index.sqlite3")
    store._conn.execute("INSERT INTO outbox (finality, event) VALUES ('pending', '{}')")
    assert store.last_seq() == 1
    store.wipe()
    assert store.last_seq() == 1  # the next delivery gets seq 2: no seq of this file is ever reused
    store.close()
