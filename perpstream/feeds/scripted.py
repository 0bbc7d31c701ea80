"""Scripted oracle prices: a fixed sequence per feed, emitted in order.

For tests and demos that need a particular move — a drop through a
liquidation price, a recovery — rather than a random one. Every scripted
price must be exactly representable at the exponent, so what is written in
the script is exactly what is published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from perpstream.domain.prices import PriceUpdate, PythPrice, normalize_feed_id
from perpstream.feeds.gbm import PYTH_EXPO, SIMULATED_SOURCE, to_mantissa

__all__ = ["ScriptedPriceGenerator"]


class ScriptedPriceGenerator:
    """Emits, on each tick, the next scripted price of every feed that has one left.

    The confidence is ``confidence_bps`` of the price (at least one unit of
    the mantissa). A script has no history to smooth, so the EMA price is
    the scripted price itself. Once a feed's path is used up it publishes
    nothing more, which is how a script makes a feed go stale.
    """

    def __init__(
        self,
        paths: Mapping[str, Sequence[Decimal | str | int]],
        *,
        confidence_bps: Decimal | str | int = 2,
        expo: int = PYTH_EXPO,
    ) -> None:
        self._expo = expo
        self._confidence_bps = Decimal(confidence_bps)
        self._paths: dict[str, list[int]] = {}
        for feed_id, path in paths.items():
            self._paths[normalize_feed_id(feed_id)] = [self._exact_mantissa(Decimal(price)) for price in path]
        self._position = 0

    @property
    def exhausted(self) -> bool:
        """Whether every path has been emitted in full."""
        return all(self._position >= len(path) for path in self._paths.values())

    def tick(self, publish_time: int, dt: float) -> list[PriceUpdate]:
        """The next price of each feed; ``dt`` is irrelevant to a script."""
        position, self._position = self._position, self._position + 1
        return [
            self._update(feed_id, path[position], publish_time)
            for feed_id, path in self._paths.items()
            if position < len(path)
        ]

    def _update(self, feed_id: str, mantissa: int, publish_time: int) -> PriceUpdate:
        conf = max(1, to_mantissa(abs(mantissa) * self._confidence_bps / 10_000, 0))
        price = PythPrice(price=mantissa, conf=conf, expo=self._expo, publish_time=publish_time)
        return PriceUpdate(feed_id=feed_id, price=price, ema_price=price, source=SIMULATED_SOURCE)

    def _exact_mantissa(self, price: Decimal) -> int:
        scaled = price.scaleb(-self._expo)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"scripted price {price} has more digits than expo {self._expo} allows")
        return int(scaled)
