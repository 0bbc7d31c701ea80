"""Daemons for the dashboard tests: the embedded demo, or one with steered prices.

Both are the real daemon (hypercorn, the actor tree, the web app) in this
test's trio run on a loopback port; the steered one replaces the price feed
and the chain with sources the test controls, through ``run_daemon``'s
``sources`` argument.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from pathlib import Path

import trio

from perpstream.chain import StoredPosition
from perpstream.config import Config
from perpstream.daemon import run_daemon
from perpstream.feeds import SimulatedFeed
from perpstream.services.store import MemoryPositionStore
from perpstream.sources import Sources
from tests.browser.steered import SteeredPrices
from tests.e2e.daemon import Daemon, e2e_config

__all__ = ["position", "serving", "steered_config", "steered_sources"]

FEED_INTERVAL_S = 0.25
STOP_GRACE_S = 1.0


def steered_config(data_dir: Path, port: int, *, stale_after_ms: int = 10_000) -> Config:
    """The default three markets, fast stream cadences, a fixed port (to restart on)."""
    return e2e_config(
        data_dir,
        server={"port": port},
        feed={"stale_after_ms": stale_after_ms},
        streams={"liquidations_interval_ms": 500, "market_stats_interval_ms": 500},
    )


def position(number: int, account: str, market_id: str, *, long: bool, size: str, collateral: str,
             entry: str) -> StoredPosition:
    return StoredPosition(
        position_id="0x" + f"{number:064x}", account=account, market_id=market_id, is_long=long,
        size=Decimal(size), collateral=Decimal(collateral), entry_price=Decimal(entry),
        entry_funding_index=Decimal(0), opened_block=1,
    )


def steered_sources(prices: SteeredPrices, positions: Iterable[StoredPosition]) -> Sources:
    store = MemoryPositionStore()
    for stored in positions:
        store.put(stored)
    return Sources(feed=SimulatedFeed(prices, interval=FEED_INTERVAL_S), store=store,
                   describe={"price feed": "steered by the test"})


@asynccontextmanager
async def serving(config: Config, *, sources: Sources | None = None) -> AsyncIterator[Daemon]:
    """Run the daemon until the block ends (``sources``: instead of the configured ones).

    The stop starts gracefully (clients get ``goodbye``, which the page must
    see) but is cut short after ``STOP_GRACE_S``: the server otherwise waits
    out its whole graceful timeout for the browser's idle keep-alive
    connection, and nothing here is a test of shutdown.
    """
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(run_daemon, config, sources=sources, shutdown=shutdown))
        host, port = bound[0]
        try:
            yield Daemon(host, port)
        finally:
            shutdown.set()
            nursery.cancel_scope.deadline = trio.current_time() + STOP_GRACE_S
