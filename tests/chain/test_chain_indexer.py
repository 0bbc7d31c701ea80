"""The indexer end to end on a real eth-tester chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from perpstream.chain import (
    Cursor,
    IndexerStatus,
    RawLog,
    RetryPolicy,
    StoreMismatchError,
    TransientChainError,
)
from perpstream.devchain import DemoLiquidator, DemoTrader, DevChain, FundingKeeper

from .helpers import (
    BTC,
    ETH,
    Recorder,
    SignedQuotes,
    assert_store_matches_contract,
    d,
    make_indexer,
    poll_until_caught_up,
)


async def test_derived_state_equals_the_contract_view(chain: DevChain, db_path: Path) -> None:
    prices = {BTC: d("65000"), ETH: d("3400")}
    quotes = await SignedQuotes.of(chain, prices)
    trader = DemoTrader(chain, [BTC, ETH], quotes, seed=3)
    keeper = FundingKeeper(chain, [BTC, ETH], lambda m: d("0.00002") if m == BTC else d("-0.00001"),
                           prices.get, clock=iter(range(1_700_000_000, 1_800_000_000, 600)).__next__)
    liquidator = DemoLiquidator(chain, quotes)
    sink = Recorder()
    indexer, _ = make_indexer(chain, db_path, sink, confirmations=2)
    store = indexer.positions()

    await keeper.post_all()
    for step in range(24):
        await trader.step()
        if step % 6 == 5:
            await poll_until_caught_up(indexer)
            await keeper.post_all()
    # a crash: high-leverage longs go under
    prices.update({BTC: d("60000"), ETH: d("3100")})
    for position in await chain.open_positions_view():
        await liquidator.liquidate(position.position_id)
    await trader.step()
    await poll_until_caught_up(indexer)

    assert liquidator.liquidated > 0 and trader.actions["open"] > 0 and trader.actions["modify"] > 0
    await assert_store_matches_contract(chain, store)
    kinds = {type(e).__name__ for e in sink.events("pending")}
    assert kinds == {
        "PositionOpened", "PositionModified", "PositionClosed", "PositionLiquidated", "FundingUpdated"
    }
    # every log on chain was delivered once as pending, in chain order
    raw = await chain.client().get_logs(0, await chain.block_number(), chain.address)
    assert [(e.meta.block_number, e.meta.log_index) for e in sink.events("pending")] == [
        (r.block_number, r.log_index) for r in raw
    ]
    head = await chain.block_number()
    header = await chain.client().get_block_header(head)
    assert header is not None and store.cursor() == Cursor(head, header.hash)


async def test_pending_first_then_final_when_deep_enough(chain: DevChain, db_path: Path) -> None:
    sink = Recorder()
    indexer, _ = make_indexer(chain, db_path, sink, confirmations=3)
    receipt = await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("10"),
                                        entry_price=d("100"))
    await poll_until_caught_up(indexer)
    assert [(d_.finality, d_.event) for d_ in sink.deliveries] == [("pending", receipt.events[0])]

    await chain.mine(2)  # two blocks on top: not yet
    await poll_until_caught_up(indexer)
    assert [d_.finality for d_ in sink.deliveries] == ["pending"]

    await chain.mine(1)  # three on top
    await poll_until_caught_up(indexer)
    assert [(d_.finality, d_.event) for d_ in sink.deliveries] == [
        ("pending", receipt.events[0]), ("final", receipt.events[0])
    ]


async def test_old_events_are_delivered_pending_then_final_at_once(chain: DevChain, db_path: Path) -> None:
    receipt = await chain.update_funding(BTC, rate_per_hour=d("0.0001"), index=d("1"), timestamp=5)
    await chain.mine(5)
    sink = Recorder()
    indexer, _ = make_indexer(chain, db_path, sink, confirmations=3)
    await poll_until_caught_up(indexer)
    assert [(x.finality, x.event) for x in sink.deliveries] == [
        ("pending", receipt.events[0]), ("final", receipt.events[0])
    ]


@attrs.define
class CorruptingClient:
    """A real chain client that spoils one log and slips in a foreign one."""

    inner: Any
    spoil_tx: str

    async def get_logs(self, first: int, last: int, address: str, topics: Any = None) -> list[RawLog]:
        logs = await self.inner.get_logs(first, last, address, topics)
        out: list[RawLog] = []
        for log in logs:
            if log.tx_hash == self.spoil_tx:
                out.append(attrs.evolve(log, data=log.data[:40]))  # truncated data
                out.append(attrs.evolve(log, topics=(b"\x42" * 32,), log_index=log.log_index + 100))
            else:
                out.append(log)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_undecodable_logs_are_reported_and_skipped(chain: DevChain, db_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    open_kw = dict(is_long=True, size=d("1"), collateral=d("10"), entry_price=d("100"))
    kept = await chain.open_position(chain.traders[0], BTC, **open_kw)
    spoiled = await chain.open_position(chain.traders[1], ETH, **open_kw)
    after = await chain.open_position(chain.traders[2], BTC, **open_kw)
    sink = Recorder()
    indexer, _ = make_indexer(chain, db_path, sink, client=CorruptingClient(chain.client(), spoiled.tx_hash))

    await poll_until_caught_up(indexer)
    assert indexer.status.decode_errors == 2
    assert sink.events("pending") == [kept.events[0], after.events[0]]
    ids = {p.position_id for p in indexer.positions().open_positions()}
    assert ids == {kept.opened_position_ids[0], after.opened_position_ids[0]}
    messages = [r.getMessage() for r in caplog.records if "does not decode" in r.getMessage()]
    assert len(messages) == 2
    assert all(f"block {spoiled.block_number}, tx {spoiled.tx_hash}" in m for m in messages)


@attrs.define
class FlakyClient:
    """Fails ``block_number`` for the first ``failures`` calls."""

    inner: Any
    failures: int
    calls: int = 0

    async def block_number(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientChainError(f"connection reset #{self.calls}")
        head: int = await self.inner.block_number()
        return head

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_transient_errors_are_retried_with_backoff(chain: DevChain, db_path: Path) -> None:
    receipt = await chain.open_position(chain.traders[0], BTC, is_long=False, size=d("1"), collateral=d("10"),
                                        entry_price=d("100"))
    sleeps: list[float] = []
    caught_up = trio.Event()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await trio.lowlevel.checkpoint()

    sink = Recorder()
    indexer, _ = make_indexer(chain, db_path, sink, client=FlakyClient(chain.client(), failures=4),
                              sleep=fake_sleep, poll_interval_s=1.0,
                              retry=RetryPolicy(initial_delay_s=0.5, max_delay_s=2.0, max_attempts=5))

    async def watch() -> None:
        while not sink.deliveries:
            await trio.sleep(0.01)
        caught_up.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await nursery.start(indexer.run)
        await caught_up.wait()
        nursery.cancel_scope.cancel()
    # doubling up to the cap, each shortened by at most the shared backoff's 20 % jitter
    assert [nominal * 0.8 <= slept <= nominal for slept, nominal in zip(sleeps[:4], [0.5, 1.0, 2.0, 2.0])] == [True] * 4
    assert sink.events("pending") == list(receipt.events)
    status: IndexerStatus = indexer.status
    assert status.rpc_errors == 4 and status.consecutive_failures == 0
    assert status.last_error == "TransientChainError: connection reset #4"


async def test_persistent_failure_raises_for_the_supervisor(chain: DevChain, db_path: Path) -> None:
    async def no_sleep(seconds: float) -> None:
        await trio.lowlevel.checkpoint()

    indexer, _ = make_indexer(chain, db_path, Recorder(), client=FlakyClient(chain.client(), failures=10**6),
                              sleep=no_sleep, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(TransientChainError, match="#3"):
        await indexer.run()
    assert indexer.status.consecutive_failures == 3

    # the supervisor's next incarnation carries the counters on
    again, _ = make_indexer(chain, db_path, Recorder(), status=indexer.status)
    await poll_until_caught_up(again)
    assert again.status is indexer.status and again.status.rpc_errors == 3


async def test_status_reports_head_and_lag(chain: DevChain, db_path: Path) -> None:
    indexer, _ = make_indexer(chain, db_path, Recorder(), max_block_range=2)
    await chain.mine(5)
    head = await chain.block_number()
    outcome = await indexer.poll_once()
    assert not outcome.caught_up
    status = indexer.status
    assert (status.head_block, status.indexed_block, status.lag) == (head, 1, head - 1)
    await poll_until_caught_up(indexer)
    assert indexer.status.lag == 0


async def test_data_file_of_another_chain_is_refused_or_reset(chain: DevChain, db_path: Path) -> None:
    await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("10"),
                              entry_price=d("100"))
    indexer, store = make_indexer(chain, db_path, Recorder())
    await poll_until_caught_up(indexer)
    store.close()

    other = await DevChain.start(traders=1)  # same contract address, new genesis
    assert other.address == chain.address
    indexer, store = make_indexer(other, db_path, Recorder())
    with pytest.raises(StoreMismatchError):
        await indexer.poll_once()
    store.close()

    indexer, _ = make_indexer(other, db_path, Recorder(), reset_on_mismatch=True)
    await poll_until_caught_up(indexer)
    assert indexer.positions().open_positions() == []


async def test_start_block_skips_history(chain: DevChain, db_path: Path) -> None:
    early = await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("10"),
                                      entry_price=d("100"))
    late = await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("2"), collateral=d("10"),
                                     entry_price=d("100"))
    sink = Recorder()
    indexer, _ = make_indexer(chain, db_path, sink, start_block=late.block_number)
    await poll_until_caught_up(indexer)
    assert sink.events("pending") == list(late.events)
    # the early position was never seen: closing it does not fit the state
    await chain.close_position(chain.traders[0], early.opened_position_ids[0], exit_price=d("100"))
    await poll_until_caught_up(indexer)
    assert indexer.status.inconsistent_events == 1
    assert [p.position_id for p in indexer.positions().open_positions()] == list(late.opened_position_ids)
