"""Funding: the skew model's rate and the continuously accruing funding index.

The index (USD per base unit) grows by ``rate × P × dt / 3600 s``. Between
events the rate and price are constant, so the index is accrued piecewise:
each :meth:`FundingState.advanced` call closes the interval that ran at the
previous rate and price, then lets the new ones take effect.

Time is integer milliseconds since the Unix epoch (the wire protocol's unit;
chain timestamps in seconds are multiplied by 1000 by the caller), so elapsed
time is exact. The state is an immutable value and never reads a clock: the
caller passes ``now_ms``.

Until the chain reports funding the model rate drives the index. A chain
``FundingUpdated`` is authoritative: its index holds as of its timestamp,
and from then on the index is extrapolated from the chain's last rate, the
model rate no longer applies (it is still worth reporting as the
``predicted_funding_rate``). The latest chain update delivered wins: ordering
(and undoing reorged events) is the indexer's job.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum

import attrs

from perpstream.domain.decimals import decimal_context
from perpstream.domain.markets import MarketParams

__all__ = ["FundingSource", "FundingState", "model_funding_rate"]

_MS_PER_HOUR = 3_600_000
_ZERO = Decimal(0)


class FundingSource(str, Enum):
    """Where the current rate comes from; the values are the wire ``source`` strings."""

    MODEL = "model"
    CHAIN = "chain"


def model_funding_rate(skew: Decimal, params: MarketParams) -> Decimal:
    """``clamp(skew / skew_scale × max_rate, −max_rate, +max_rate)`` per hour.

    Positive when longs dominate: longs pay shorts.
    """
    cap = params.max_funding_rate_per_hour
    with decimal_context():
        rate = skew * cap / params.skew_scale
        if rate > cap:
            return cap
        if rate < -cap:
            return -cap
        return rate


@attrs.frozen
class FundingState:
    """The funding index of one market as of ``as_of_ms``, and what drives it since.

    ``price`` is the mark price in effect since ``as_of_ms`` (None before the
    first price: nothing accrues without one).
    """

    index: Decimal
    rate_per_hour: Decimal
    source: FundingSource
    as_of_ms: int
    price: Decimal | None = None

    @classmethod
    def start(
        cls,
        now_ms: int,
        *,
        index: Decimal = _ZERO,
        rate_per_hour: Decimal = _ZERO,
    ) -> FundingState:
        """A model-driven state starting at ``now_ms``."""
        return cls(index=index, rate_per_hour=rate_per_hour, source=FundingSource.MODEL, as_of_ms=now_ms)

    def index_at(self, now_ms: int) -> Decimal:
        """The index at ``now_ms``, extrapolated at the current rate and price.

        Time never runs backwards: a ``now_ms`` at or before ``as_of_ms`` gives
        ``index`` itself (a chain timestamp may be ahead of the local clock).
        """
        if self.price is None or now_ms <= self.as_of_ms:
            return self.index
        with decimal_context():
            return self.index + self.rate_per_hour * self.price * (now_ms - self.as_of_ms) / _MS_PER_HOUR

    def advanced(
        self,
        now_ms: int,
        *,
        price: Decimal | None = None,
        model_rate: Decimal | None = None,
    ) -> FundingState:
        """Accrue up to ``now_ms``, then apply a new price and/or model rate.

        Call it whenever the price or the skew changes. ``model_rate`` is
        ignored once the chain drives funding.
        """
        rate = self.rate_per_hour
        if model_rate is not None and self.source is FundingSource.MODEL:
            rate = model_rate
        return FundingState(
            index=self.index_at(now_ms),
            rate_per_hour=rate,
            source=self.source,
            as_of_ms=max(now_ms, self.as_of_ms),
            price=self.price if price is None else price,
        )

    def with_chain_update(self, *, rate_per_hour: Decimal, index: Decimal, timestamp_ms: int) -> FundingState:
        """The state after a chain ``FundingUpdated(rate, index, timestamp)``."""
        return FundingState(
            index=index,
            rate_per_hour=rate_per_hour,
            source=FundingSource.CHAIN,
            as_of_ms=timestamp_ms,
            price=self.price,
        )
