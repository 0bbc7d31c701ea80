"""Crashes at any point: the indexer resumes with nothing lost and nothing applied twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any, Callable

import pytest
import trio

import perpstream.chain.store as store_module
from perpstream.chain import Cursor, IndexedEvent, PositionStore
from perpstream.devchain import DevChain, OpenOrder

from .helpers import BTC, ETH, Recorder, assert_store_matches_contract, d, make_indexer, poll_until_caught_up
from .rpc_node import DevChainNode


async def make_history(chain: DevChain, rounds: int) -> None:
    """Blocks with several events each: batch opens, modifies, closes, funding."""
    for r in range(rounds):
        trader = chain.traders[r % len(chain.traders)]
        orders = [
            OpenOrder(BTC if i % 2 else ETH, i % 3 != 0, d(f"{i + 1}.5"), d("100"), d("50")) for i in range(4)
        ]
        receipt = await chain.open_positions(trader, orders)
        ids = receipt.opened_position_ids
        await chain.modify_position(trader, ids[0], size=d("9"), collateral=d("120"), price=d("51"))
        await chain.close_position(trader, ids[1], exit_price=d("49"))
        await chain.update_funding(BTC, rate_per_hour=d("0.0001"), index=d(f"0.{r}"), timestamp=100 + r)


def key(delivery: IndexedEvent) -> tuple[str, str, int]:
    return (delivery.finality, delivery.event.meta.tx_hash, delivery.event.meta.log_index)


async def reference_run(chain: DevChain, path: Path, *, max_block_range: int) -> tuple[Recorder, Any]:
    """An uninterrupted run; the same block ranges give the same delivery order."""
    sink = Recorder()
    indexer, store = make_indexer(chain, path, sink, confirmations=2, max_block_range=max_block_range)
    await poll_until_caught_up(indexer)
    snapshot = indexer.positions().snapshot()
    store.close()
    return sink, snapshot


async def test_exception_before_commit_loses_and_repeats_nothing(
    chain: DevChain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_history(chain, 3)
    await chain.mine(3)
    reference, expected = await reference_run(chain, tmp_path / "ref.sqlite3", max_block_range=2)

    path = tmp_path / "crash.sqlite3"
    first = Recorder()
    indexer, store = make_indexer(chain, path, first, confirmations=2, max_block_range=2)
    transitions = 0
    real_next_record = store_module.next_record

    def dies_midway(event: Any, current: Any) -> Any:
        nonlocal transitions
        transitions += 1
        if transitions == 9:  # some events of the batch are already written
            raise RuntimeError("power cut")
        return real_next_record(event, current)

    monkeypatch.setattr(store_module, "next_record", dies_midway)
    with pytest.raises(RuntimeError, match="power cut"):
        await poll_until_caught_up(indexer)
    monkeypatch.undo()
    store.close()

    # The failed batch left no trace: state and deliveries stop at the last commit.
    reader = PositionStore(path)
    cursor = reader.cursor()
    assert cursor is not None and transitions > len(first.events("pending")) > 0
    assert all(e.meta.block_number <= cursor.block_number for e in first.events("pending"))
    assert [e for e in reference.events("pending") if e.meta.block_number <= cursor.block_number] == \
        first.events("pending")

    second = Recorder()
    restarted, _ = make_indexer(chain, path, second, confirmations=2, max_block_range=2)
    await poll_until_caught_up(restarted)
    assert first.deliveries + second.deliveries == reference.deliveries  # exactly once, in order
    assert reader.snapshot() == expected
    await assert_store_matches_contract(chain, reader)


async def test_crash_during_delivery_redelivers_the_rest(chain: DevChain, tmp_path: Path) -> None:
    await make_history(chain, 2)
    await chain.mine(3)
    reference, expected = await reference_run(chain, tmp_path / "ref.sqlite3", max_block_range=4)

    path = tmp_path / "crash.sqlite3"
    first = Recorder()

    async def sink_dies(delivery: IndexedEvent) -> None:
        if len(first.deliveries) == 5:
            raise RuntimeError("consumer crashed")
        await first(delivery)

    indexer, store = make_indexer(chain, path, sink_dies, confirmations=2, max_block_range=4)
    with pytest.raises(RuntimeError, match="consumer crashed"):
        await poll_until_caught_up(indexer)
    store.close()

    second = Recorder()
    restarted, _ = make_indexer(chain, path, second, confirmations=2, max_block_range=4)
    await poll_until_caught_up(restarted)
    # at least once: the restart re-delivers the unacknowledged batch, then carries on
    redelivered_from = reference.deliveries.index(second.deliveries[0])
    assert redelivered_from <= 5
    assert second.deliveries == reference.deliveries[redelivered_from:]
    assert PositionStore(path).snapshot() == expected


@pytest.mark.e2e
async def test_kill_9_resumes_from_the_cursor(chain: DevChain, tmp_path: Path) -> None:
    """A real indexer process killed with SIGKILL twice, then run to the end."""
    await make_history(chain, 6)
    await chain.mine(3)
    head = await chain.block_number()
    reference, expected = await reference_run(chain, tmp_path / "ref.sqlite3", max_block_range=3)

    db, deliveries, errors = tmp_path / "killed.sqlite3", tmp_path / "deliveries.jsonl", tmp_path / "stderr.txt"
    node = DevChainNode(chain)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(node.serve)
        command = [sys.executable, str(Path(__file__).with_name("indexer_process.py")), url, chain.address,
                   str(db), str(deliveries)]

        async def run_child(done: Callable[[Cursor | None], bool], *, kill: bool) -> Cursor | None:
            """Start the indexer process; stop it (SIGKILL or SIGTERM) once ``done(cursor)``."""
            with errors.open("a") as stderr:
                process = await trio.lowlevel.open_process(command, stderr=stderr)
            reader: PositionStore | None = None
            try:
                with trio.fail_after(30):
                    while True:
                        await trio.sleep(0.01)
                        assert process.poll() is None, errors.read_text()
                        if reader is None and db.exists():
                            reader = PositionStore(db)
                        cursor = reader.cursor() if reader else None
                        if done(cursor):
                            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                            await process.wait()
                            return cursor
            finally:
                if reader:
                    reader.close()

        first_kill = await run_child(lambda c: c is not None and c.block_number >= head // 3, kill=True)
        assert first_kill is not None and first_kill.block_number < head  # killed on the way
        await run_child(lambda c: c is not None and c.block_number >= 2 * head // 3, kill=True)
        await run_child(lambda c: c is not None and c.block_number == head and not _outbox_has_rows(db),
                        kill=False)
        nursery.cancel_scope.cancel()

    assert "does not fit" not in errors.read_text()  # nothing applied twice
    final_reader = PositionStore(db)
    assert final_reader.snapshot() == expected
    await assert_store_matches_contract(chain, final_reader)
    delivered = [json.loads(line) for line in deliveries.read_text().splitlines()]
    got = {(x["finality"], x["tx_hash"], x["log_index"]) for x in delivered}
    assert got == {key(x) for x in reference.deliveries}  # nothing lost
    # at least once: each kill may repeat at most the batch in flight
    # (3 blocks of at most 6 events, pending and final)
    assert len(delivered) - len(reference.deliveries) <= 2 * 3 * 6 * 2


def _outbox_has_rows(db: Path) -> bool:
    with closing(sqlite3.connect(db)) as conn:
        return bool(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
