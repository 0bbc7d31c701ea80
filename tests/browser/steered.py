"""Prices a test steers: a level per feed, a small wobble so prices keep moving.

A random walk cannot be trusted to cross a liquidation level during a test,
and a fixed script races the browser (the drop may come before the page has
subscribed). Here the test moves the level when it is ready, so the warning
is caused by the test, not by luck or timing.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from perpstream.domain.prices import PriceUpdate, normalize_feed_id
from perpstream.feeds import ScriptedPriceGenerator

__all__ = ["SteeredPrices"]

# A wobble of 0.1 bp: visible on every tile, far from any liquidation level.
_WOBBLE = Decimal("0.00001")
_PYTH_UNIT = Decimal("1e-8")  # the simulated feeds' exponent: every price is exact


class SteeredPrices:
    """A ``PriceGenerator``: each tick publishes level ± wobble for every live feed."""

    def __init__(self, levels: Mapping[str, Decimal | str]) -> None:
        self._levels = {normalize_feed_id(feed): Decimal(level) for feed, level in levels.items()}
        self._ticks = 0

    def steer(self, feed_id: str, level: Decimal | str) -> None:
        """Move a feed's level; its next tick publishes around the new level."""
        self._levels[normalize_feed_id(feed_id)] = Decimal(level)

    def halt(self, feed_id: str) -> None:
        """Publish nothing more for this feed, as an oracle that went quiet."""
        del self._levels[normalize_feed_id(feed_id)]

    def tick(self, publish_time: int, dt: float) -> list[PriceUpdate]:
        self._ticks += 1
        sign = 1 if self._ticks % 2 else -1
        prices = {
            feed: [level + sign * (level * _WOBBLE).quantize(_PYTH_UNIT)]
            for feed, level in self._levels.items()
        }
        # The script generator makes exact Pyth prices (same confidence model).
        return ScriptedPriceGenerator(prices).tick(publish_time, dt)
