"""Reorgs of every depth the indexer can undo, seen from a client of the daemon.

The indexer's own reorg handling is proven in ``tests/chain/test_chain_reorg``;
this is the rest of the way: the daemon's markets roll their books back, a
client watching the account gets one ``position_reverted`` per undone event
(newest first, naming it by ``(tx_hash, log_index)``), its positions match
the contract again, and an undone event never comes back as ``final``.
Real time: the embedded chain runs py-evm in a worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import ChildSpec
from perpstream.chain import ChainEvent, IndexerStore, PositionStore
from perpstream.chain.indexer import IndexerStatus
from perpstream.clock import WallClock
from perpstream.config import parse_config
from perpstream.devchain import DevChain
from perpstream.services.chain_actors import IndexerActor
from perpstream.services.topics import INDEXER
from perpstream.sources import Sources, build_feed
from tests.chain.helpers import BTC, ETH

from .clients import Listener, daemon_with

pytestmark = pytest.mark.e2e

CONFIRMATIONS = 3


@contextmanager
def chain_sources(config: Any, chain: DevChain, path: Path) -> Iterator[Sources]:
    """The daemon's sources with the test's own chain behind the indexer."""
    store, positions = IndexerStore(path), PositionStore(path)
    status: list[IndexerStatus] = []
    indexer = ChildSpec(INDEXER, lambda: IndexerActor(
        client=chain.client, address=lambda: chain.address, store=store, markets=[BTC, ETH],
        confirmations=CONFIRMATIONS, start_block=0, poll_interval_s=0.05, max_block_range=50,
        reset_on_mismatch=True, status=lambda s: status.__setitem__(slice(None), [s])))
    try:
        yield Sources(feed=build_feed(config, WallClock()), store=positions, chain=[indexer],
                      indexer_status=lambda: status[0] if status else None)
    finally:
        positions.close()
        store.close()


def booked(update: dict[str, Any]) -> list[tuple[str, ...]]:
    """The chain-derived fields of a positions_update (not the ones priced now)."""
    fields = ("position_id", "market_id", "side", "size", "entry_price", "collateral")
    return sorted(tuple(p[f] for f in fields) for p in update["positions"])


def event_id(message: dict[str, Any]) -> tuple[str, int]:
    return message["event"]["tx_hash"], message["event"]["log_index"]


def chain_id(event: ChainEvent) -> tuple[str, int]:
    return event.meta.tx_hash, event.meta.log_index


async def test_reorgs_up_to_the_confirmation_depth_are_undone_for_clients(tmp_path: Path) -> None:
    chain = await DevChain.start(traders=4)
    config = parse_config({"server": {"data_dir": str(tmp_path)}, "streams": {"positions_interval_ms": 250},
                           "chain": {"confirmations": CONFIRMATIONS}})

    with chain_sources(config, chain, tmp_path / "index.sqlite3") as sources:
        await watch_reorgs(config, chain, sources)


async def watch_reorgs(config: Any, chain: DevChain, sources: Sources) -> None:
    """Reorgs of every depth up to the confirmations, each under a client watching the account."""
    trader, other = chain.traders[0], chain.traders[1]
    async with daemon_with(config, sources) as daemon, trio.open_nursery() as clients:
        watcher: Listener = await daemon.listen(clients, f"/api/v1/ws/positions/{trader}")
        for depth in range(1, CONFIRMATIONS + 1):
            opened = await chain.open_position(trader, BTC, is_long=True, size=Decimal("1"),
                                               collateral=Decimal("300"), entry_price=Decimal("65000"))
            [kept] = opened.opened_position_ids
            await watcher.wait_until(lambda m: m["type"] == "position_opened" and event_id(m) == chain_id(
                opened.events[0]))
            before = await watcher.next("positions_update")

            fork = await chain.snapshot()
            steps: list[Callable[[], Awaitable[Any]]] = [
                lambda: chain.modify_position(trader, kept, size=Decimal("2"), collateral=Decimal("400"),
                                              price=Decimal("65100")),
                lambda: chain.open_position(trader, ETH, is_long=False, size=Decimal("5"),
                                            collateral=Decimal("200"), entry_price=Decimal("3400")),
                lambda: chain.close_position(trader, kept, exit_price=Decimal("65200")),
            ]
            undone = [event for step in steps[:depth] for event in (await step()).events]
            last = undone[-1]
            await watcher.wait_until(lambda m: m.get("event") is not None and event_id(m) == chain_id(last))
            seen = len(watcher.frames)

            # The fork wins: a longer branch without those blocks.
            await chain.revert(fork)
            await chain.open_position(other, ETH, is_long=True, size=Decimal("1"), collateral=Decimal("100"),
                                      entry_price=Decimal("3400"))
            await chain.mine(depth)
            for event in reversed(undone):
                reverted = await watcher.wait_until(
                    lambda m: m["type"] == "position_reverted" and event_id(m) == chain_id(event), start=seen)
                assert reverted["finality"] == "reverted"
            reverts = [m for _, m in watcher.frames[seen:] if m["type"] == "position_reverted"]
            assert [event_id(m) for m in reverts] == [chain_id(e) for e in reversed(undone)]  # newest first
            assert [m["reverted_type"] for m in reverts][-1] == "position_modified"

            after = await watcher.next("positions_update")
            assert booked(after) == booked(before)  # the account as it was at the fork
            on_chain = sorted((p.position_id, p.size) for p in await chain.open_positions_view()
                              if p.account == trader)
            assert sorted((p["position_id"], Decimal(p["size"])) for p in after["positions"]) == on_chain

        # Deep enough now: what survived turns final; nothing undone ever does.
        await chain.mine(CONFIRMATIONS + 1)
        await watcher.wait_until(lambda m: m.get("finality") == "final" and m["position_id"] == kept)
        await trio.sleep(0.5)
        clients.cancel_scope.cancel()

    reverted_ids = {event_id(m) for _, m in watcher.frames if m["type"] == "position_reverted"}
    final_ids = {event_id(m) for _, m in watcher.frames if m.get("finality") == "final"}
    assert len(reverted_ids) == 1 + 2 + 3 and not reverted_ids & final_ids
    assert watcher.close_code is None
    assert [m["seq"] for _, m in watcher.frames] == list(range(1, len(watcher.frames) + 1))
