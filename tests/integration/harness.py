"""The whole service tree on trio's virtual clock, with scripted sources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal

import attrs
from quart_trio import QuartTrio

import actors
from perpstream.history import StreamHistory
from perpstream.chain.events import (
    EventMeta,
    IndexedEvent,
    PositionOpened,
    StoredPosition,
)
from perpstream.clock import WallClock
from perpstream.config import Config, parse_config
from perpstream.feeds import SimulatedFeed
from perpstream.services.messages import ChainDelivery
from perpstream.services.store import MemoryPositionStore
from perpstream.services.topics import market_name
from perpstream.services.tree import build_tree
from perpstream.web import AppContext, Metrics, create_app

BTC = "btc-usdc-perp"
BTC_FEED = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


def service_config(**sections: object) -> Config:
    """One market (BTC) unless told otherwise; small grace periods."""
    data: dict[str, object] = {
        "sessions": {"grace_s": 3.0},
        "markets": [{"id": BTC, "base": "BTC", "pyth_feed_id": BTC_FEED}],
    }
    data.update(sections)
    return parse_config(data)


@attrs.define
class Service:
    config: Config
    system: actors.ActorSystem
    context: AppContext
    app: QuartTrio
    store: MemoryPositionStore
    feed: SimulatedFeed
    clock: WallClock

    async def deliver(self, indexed: IndexedEvent, market_id: str = BTC) -> None:
        await self.system.registry.ref(market_name(market_id)).send(ChainDelivery(indexed))


@asynccontextmanager
async def running_service(
    config: Config,
    paths: Mapping[str, Sequence[Decimal | str | int]],
    *,
    store: MemoryPositionStore | None = None,
    interval: float = 0.4,
    feed_lag_s: float = 0.0,
) -> AsyncIterator[Service]:
    """Run the tree and the app; ``feed_lag_s`` makes every price that much older."""
    clock = WallClock(epoch_at_start=1_800_000_000.0)
    feed = SimulatedFeed.scripted(paths, interval=interval, wall_clock=lambda: clock.now() - feed_lag_s)
    store = store or MemoryPositionStore()
    history = StreamHistory.in_memory(size=config.streams.history_size, ttl_s=config.streams.history_ttl_s,
                                      now_ms=clock.now_ms)
    tree = build_tree(config, clock=clock, feed=feed, store=store, history=history)
    async with actors.open_system(tree.root) as system:
        context = AppContext(config=config, registry=system.registry, clock=clock, metrics=Metrics(), history=history)
        yield Service(config, system, context, create_app(context), store, feed, clock)


_block = 0


def opened(
    position_id: int, account: str, *, is_long: bool, size: str, collateral: str, entry: str,
    market_id: str = BTC, block: int | None = None, log_index: int = 0,
) -> IndexedEvent:
    """A pending PositionOpened delivery, as the indexer makes them."""
    global _block
    _block += 1
    number = block if block is not None else _block
    meta = EventMeta(number, "0x" + f"{number:064x}", "0x" + f"{position_id:064x}", log_index)
    from eth_utils import to_checksum_address

    return IndexedEvent(
        PositionOpened(meta, "0x" + f"{position_id:064x}", to_checksum_address(account), market_id, is_long,
                       Decimal(size), Decimal(collateral), Decimal(entry), Decimal(0)),
        "pending",
    )


def stored(position_id: int, account: str, *, is_long: bool, size: str, collateral: str, entry: str,
           market_id: str = BTC) -> StoredPosition:
    from eth_utils import to_checksum_address

    return StoredPosition("0x" + f"{position_id:064x}", to_checksum_address(account), market_id, is_long,
                          Decimal(size), Decimal(collateral), Decimal(entry), Decimal(0), 1)
