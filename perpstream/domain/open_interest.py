"""Open interest of one market, kept as running sums.

Every position event changes the totals by that one position, so the
market-stats stream never sums over all positions. The sums are exact (they
never round; see :func:`~perpstream.domain.decimals.exact_context`).
"""

from __future__ import annotations

from decimal import Decimal

import attrs

from perpstream.domain.decimals import exact_context
from perpstream.domain.positions import Position, Side

__all__ = ["OpenInterest"]

_ZERO = Decimal(0)


@attrs.frozen
class OpenInterest:
    """Long and short open interest (base units) and the number of open positions.

    Immutable: each update returns a new value in O(1), so a snapshot handed
    to a stream can never change under it.
    """

    long: Decimal = _ZERO
    short: Decimal = _ZERO
    open_positions: int = 0

    @property
    def skew(self) -> Decimal:
        """``long − short``: positive when longs dominate (and pay funding)."""
        with exact_context():
            return self.long - self.short

    def usd(self, price: Decimal) -> Decimal:
        """``open_interest_usd = (long + short) × P``."""
        with exact_context():
            return (self.long + self.short) * price

    def opened(self, position: Position) -> OpenInterest:
        """After ``position`` opened."""
        return self._moved(position.side, position.size, positions=1)

    def closed(self, position: Position) -> OpenInterest:
        """After ``position`` (as last known) closed or was liquidated."""
        return self._moved(position.side, -position.size, positions=-1)

    def modified(self, before: Position, after: Position) -> OpenInterest:
        """After ``before`` became ``after`` (same position, new size)."""
        if before.side is not after.side:
            raise ValueError("a modification cannot change a position's side")
        with exact_context():
            change = after.size - before.size
        return self._moved(after.side, change, positions=0)

    def _moved(self, side: Side, change: Decimal, positions: int) -> OpenInterest:
        with exact_context():
            long = self.long + change if side is Side.LONG else self.long
            short = self.short + change if side is Side.SHORT else self.short
        count = self.open_positions + positions
        if long < 0 or short < 0 or count < 0:
            raise ValueError("open interest would become negative: a close without its open")
        return OpenInterest(long=long, short=short, open_positions=count)
