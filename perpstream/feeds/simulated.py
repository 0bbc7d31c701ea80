"""The embedded price feed: generated prices on Pyth's cadence, no network.

``SimulatedFeed`` owns the timing and the ``PriceFeed`` contract; what the
prices are is up to its generator — a seeded random walk
(``GbmPriceGenerator``) or a fixed script (``ScriptedPriceGenerator``).
Time comes from trio's clock, so under a virtual clock a test can run hours
of prices in milliseconds, deterministically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Protocol

import trio

import attrs

from perpstream.domain.prices import PriceUpdate
from perpstream.feeds.feed import FeedStatus, FeedStatusRecorder, OnUpdate
from perpstream.feeds.gbm import SIMULATED_SOURCE, GbmPriceGenerator, MarketSpec
from perpstream.feeds.scripted import ScriptedPriceGenerator

__all__ = ["DEFAULT_INTERVAL", "PriceGenerator", "SimulatedFeed"]

DEFAULT_INTERVAL = 0.4  # seconds; Pyth publishes every 400 ms slot


class PriceGenerator(Protocol):
    def tick(self, publish_time: int, dt: float) -> list[PriceUpdate]:
        """The updates of one tick, ``dt`` seconds of market time after the previous one."""
        ...


class SimulatedFeed:
    """A ``PriceFeed`` that publishes its generator's prices every ``interval`` seconds.

    ``run`` publishes the first prices at once and then calls
    ``task_status.started()``, so a caller that starts it with
    ``nursery.start`` already has a price for every feed. ``publish_time`` is
    ``wall_clock()`` (epoch seconds) truncated to whole seconds, as Pyth's is,
    so several ticks of one second share it; each tick has its own ``slot``,
    counted from the wall clock in ticks, so consumers order the prices of
    one second exactly as they must order Hermes's. ``pause()`` makes the feed go
    quiet — ticks pass without publishing, as if the oracle stalled — until
    ``resume()``; the first tick after that covers the whole silence, so a
    random walk moves as far as the market would have.
    """

    source = SIMULATED_SOURCE

    def __init__(
        self,
        generator: PriceGenerator,
        *,
        interval: float = DEFAULT_INTERVAL,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._generator = generator
        self._interval = interval
        self._wall_clock = wall_clock
        self._paused = False
        self._status = FeedStatusRecorder(SIMULATED_SOURCE)

    @classmethod
    def random_walk(
        cls,
        markets: Sequence[MarketSpec],
        *,
        seed: int | None = None,
        interval: float = DEFAULT_INTERVAL,
        wall_clock: Callable[[], float] = time.time,
    ) -> SimulatedFeed:
        """A feed of seeded GBM prices for ``markets``."""
        return cls(GbmPriceGenerator(markets, seed=seed), interval=interval, wall_clock=wall_clock)

    @classmethod
    def scripted(
        cls,
        paths: Mapping[str, Sequence[Decimal | str | int]],
        *,
        confidence_bps: Decimal | str | int = 2,
        interval: float = DEFAULT_INTERVAL,
        wall_clock: Callable[[], float] = time.time,
    ) -> SimulatedFeed:
        """A feed that plays ``paths`` (feed id → prices), one step per interval."""
        generator = ScriptedPriceGenerator(paths, confidence_bps=confidence_bps)
        return cls(generator, interval=interval, wall_clock=wall_clock)

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def status(self) -> FeedStatus:
        return self._status.snapshot()

    async def run(
        self,
        on_update: OnUpdate,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._status.connected()
        try:
            start = trio.current_time()
            first_slot = math.floor(self._wall_clock() / self._interval)
            tick = 0
            tick_at = last_published_at = start
            started = False
            while True:
                if not self._paused:
                    publish_time = int(self._wall_clock())
                    for update in self._generator.tick(publish_time, tick_at - last_published_at):
                        update = attrs.evolve(update, slot=first_slot + tick)
                        self._status.delivered(update, self._wall_clock())
                        await on_update(update)
                    last_published_at = tick_at
                if not started:
                    started = True
                    task_status.started()
                # Ticks stay on the grid start + k·interval (no drift), and a
                # consumer slower than the cadence skips ticks rather than
                # receiving a burst of catch-up prices.
                tick = max(tick + 1, math.ceil((trio.current_time() - start) / self._interval - 1e-9))
                tick_at = start + tick * self._interval
                await trio.sleep_until(tick_at)
        finally:
            self._status.disconnected("stopped")
