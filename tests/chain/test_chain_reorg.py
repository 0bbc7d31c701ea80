"""Reorgs made on a real eth-tester chain with snapshot / revert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from perpstream.chain import ChainEvent, PositionOpened, RawLog, ReorgTooDeepError, StoredPosition
from perpstream.devchain import DevChain

from .helpers import BTC, ETH, Recorder, assert_store_matches_contract, d, make_indexer, poll_until_caught_up


async def old_branch(chain: DevChain, position_id: str, depth: int) -> list[ChainEvent]:
    """``depth`` blocks, each one transaction that changes indexed state."""
    trader = chain.traders[0]
    steps = [
        lambda: chain.modify_position(
            trader, position_id, size=d("2"), collateral=d("150"), price=d("101")
        ),
        lambda: chain.update_funding(BTC, rate_per_hour=d("0.0002"), index=d("2"), timestamp=20),
        lambda: chain.close_position(trader, position_id, exit_price=d("103")),
    ]
    events: list[ChainEvent] = []
    for step in steps[:depth]:
        events.extend((await step()).events)
    return events


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_reorg_rolls_state_back_and_forward(chain: DevChain, db_path: Path, depth: int) -> None:
    sink = Recorder()
    indexer, _ = make_indexer(chain, db_path, sink, confirmations=3)
    store = indexer.positions()
    opened = await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("100"),
                                       entry_price=d("100"))
    position_id = opened.opened_position_ids[0]
    funded = await chain.update_funding(BTC, rate_per_hour=d("0.0001"), index=d("1"), timestamp=10)
    await poll_until_caught_up(indexer)
    before = store.snapshot()

    fork_point = await chain.snapshot()
    undone = await old_branch(chain, position_id, depth)
    await poll_until_caught_up(indexer)
    assert sink.events("pending")[-depth:] == undone
    seen_before_reorg = len(sink.deliveries)

    await chain.revert(fork_point)
    replacement = await chain.open_position(chain.traders[1], ETH, is_long=False, size=d("3"),
                                            collateral=d("50"), entry_price=d("10"))
    await chain.mine(depth)  # the new branch is the longer one
    await poll_until_caught_up(indexer)

    assert indexer.status.reorgs == 1
    changes = [x for x in sink.deliveries[seen_before_reorg:] if x.finality != "final"]
    assert [x.finality for x in changes] == ["reverted"] * depth + ["pending"]
    assert [x.event for x in changes[:depth]] == undone[::-1]  # newest first
    assert changes[-1].event == replacement.events[0]
    # each undo hands back the record as it was before that event
    # (with the finality its own last event has at the time of the undo)
    restored = changes[depth - 1].restored
    assert isinstance(restored, StoredPosition)
    assert attrs.evolve(restored, finality="pending") == next(
        p for p in before.positions if p.position_id == position_id)
    assert changes[depth - 1].before == restored
    if depth >= 2:
        assert changes[depth - 2].restored == before.funding[0]

    # the state is the fork point's plus the new branch, as the contract itself says
    await assert_store_matches_contract(chain, store)
    after = store.snapshot()
    assert after.funding == before.funding
    # ... and the restored position's open event has become final meanwhile
    assert [p for p in after.positions if p.position_id == position_id] == [
        attrs.evolve(p, finality="final") for p in before.positions if p.position_id == position_id
    ]

    # the undone events never became final; everything else does, in order
    await chain.mine(4)
    await poll_until_caught_up(indexer)
    assert sink.events("final") == [*opened.events, *funded.events, *replacement.events]


async def test_reorg_deeper_than_confirmations_stops_the_indexer(chain: DevChain, db_path: Path) -> None:
    indexer, _ = make_indexer(chain, db_path, Recorder(), confirmations=2)
    fork_point = await chain.snapshot()
    for _ in range(4):
        await chain.update_funding(BTC, rate_per_hour=d("0"), index=d("0"), timestamp=1)
    await poll_until_caught_up(indexer)
    await chain.revert(fork_point)
    await chain.mine(6)
    with pytest.raises(ReorgTooDeepError, match="confirmations=2"):
        await poll_until_caught_up(indexer)


@attrs.define
class StaleLogsClient:
    """Returns the first eth_getLogs reply as if it came from another branch."""

    inner: Any
    served_stale: bool = False

    async def get_logs(self, first: int, last: int, address: str, topics: Any = None) -> list[RawLog]:
        logs: list[RawLog] = await self.inner.get_logs(first, last, address, topics)
        if not self.served_stale:
            self.served_stale = True
            return [attrs.evolve(log, block_hash="0x" + "ee" * 32) for log in logs]
        return logs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_logs_from_another_branch_are_not_committed(chain: DevChain, db_path: Path) -> None:
    receipt = await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("1"),
                                        entry_price=d("1"))
    sink = Recorder()
    indexer, _ = make_indexer(chain, db_path, sink, client=StaleLogsClient(chain.client()))
    outcome = await indexer.poll_once()
    assert outcome.events == 0
    assert indexer.positions().cursor() is None and sink.deliveries == []
    await poll_until_caught_up(indexer)
    assert sink.events("pending") == list(receipt.events)
    assert isinstance(sink.events("pending")[0], PositionOpened)


async def test_head_below_the_cursor_waits_for_the_new_branch(chain: DevChain, db_path: Path) -> None:
    sink = Recorder()
    indexer, _ = make_indexer(chain, db_path, sink, confirmations=3)
    fork_point = await chain.snapshot()
    receipt = await chain.update_funding(BTC, rate_per_hour=d("0.0001"), index=d("1"), timestamp=1)
    await chain.mine(1)
    await poll_until_caught_up(indexer)
    await chain.revert(fork_point)  # head is now below the cursor
    outcome = await indexer.poll_once()
    assert outcome.caught_up and indexer.status.reorgs == 0
    await chain.mine(3)
    await poll_until_caught_up(indexer)
    assert indexer.status.reorgs == 1
    assert [x.event for x in sink.deliveries if x.finality == "reverted"] == list(receipt.events)
    assert indexer.positions().funding(BTC) is None


@attrs.define
class UnlinkedHeadersClient:
    """Serves headers whose parent hash is zero above ``from_block``, as Hardhat 2.29 does
    for hardhat_mine's blocks once evm_revert has crossed them."""

    inner: Any
    from_block: int

    async def get_block_header(self, number: int) -> Any:
        header = await self.inner.get_block_header(number)
        if header is not None and number > self.from_block:
            return attrs.evolve(header, parent_hash="0x" + "00" * 32)
        return header

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_chain_that_never_links_up_counts_as_failing(chain: DevChain, db_path: Path) -> None:
    from perpstream.chain import TransientChainError

    await chain.mine(10)
    indexer, _ = make_indexer(chain, db_path, Recorder(), client=UnlinkedHeadersClient(chain.client(), 3))
    outcomes = [await indexer.poll_once() for _ in range(4)]
    assert all(o.caught_up and o.events == 0 for o in outcomes)  # a moving chain: poll again...
    with pytest.raises(TransientChainError, match="changed during 5 polls in a row"):
        await indexer.poll_once()  # ... but not for ever: the retry backoff and readiness take over
