"""Simulated oracle prices: geometric Brownian motion per market.

Each market's price follows ``S ← S · exp(−σ²dt/2 + σ√dt·Z)`` with an
annualized volatility σ and no drift, the textbook model for a price that
cannot go negative and whose returns scale with √time. The walk runs in
floats — it is noise, not money — and every emitted price is rounded once
to an exact integer mantissa at ``expo``, as Pyth publishes it. Around the
price the generator draws a confidence interval of a few basis points that
varies from tick to tick, and keeps an exponential moving average the way
Pyth's ``ema_price`` smooths its aggregate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal

import attrs

from perpstream.domain.prices import PriceUpdate, PythPrice, normalize_feed_id

__all__ = ["PYTH_EXPO", "REFERENCE_MARKETS", "SIMULATED_SOURCE", "GbmPriceGenerator", "MarketSpec", "to_mantissa"]

SIMULATED_SOURCE = "simulated"
SECONDS_PER_YEAR = 365 * 24 * 3600
PYTH_EXPO = -8


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


def _positive_decimal(instance: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class MarketSpec:
    """One simulated market: where its price starts and how wildly it moves."""

    feed_id: str = attrs.field(converter=normalize_feed_id)
    start_price: Decimal = attrs.field(converter=Decimal, validator=_positive_decimal)
    annual_volatility: float = attrs.field(converter=float, validator=_non_negative)
    confidence_bps: float = attrs.field(default=3.0, converter=float, validator=_non_negative)


REFERENCE_MARKETS: tuple[MarketSpec, ...] = (
    MarketSpec("e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43", "65000", 0.60, 2.0),
    MarketSpec("ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace", "3400", 0.75, 3.0),
    MarketSpec("ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d", "150", 1.00, 5.0),
)
"""BTC/USD, ETH/USD and SOL/USD on their real Pyth feed ids, at plausible levels."""


@attrs.define
class _MarketState:
    spec: MarketSpec
    price: float
    ema_price: float
    ema_conf: float


def to_mantissa(value: float | Decimal, expo: int) -> int:
    """``value / 10^expo`` rounded half-even to an integer, exactly."""
    scaled = Decimal(value).scaleb(-expo)
    return int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN))


class GbmPriceGenerator:
    """Seeded GBM prices for a fixed list of markets.

    The same seed and the same sequence of ``tick`` calls give the same
    prices, draw for draw. ``ema_window`` is the EMA's time constant in
    seconds; Pyth's is about an hour.
    """

    def __init__(
        self,
        markets: Sequence[MarketSpec],
        *,
        seed: int | None = None,
        expo: int = PYTH_EXPO,
        ema_window: float = 3600.0,
    ) -> None:
        if len({market.feed_id for market in markets}) != len(markets):
            raise ValueError("each simulated market needs its own feed id")
        if ema_window <= 0:
            raise ValueError("ema_window must be positive")
        self._rng = random.Random(seed)
        self._expo = expo
        self._ema_window = ema_window
        self._markets = [
            _MarketState(market, float(market.start_price), float(market.start_price), 0.0) for market in markets
        ]
        self._first_tick = True

    @property
    def feed_ids(self) -> tuple[str, ...]:
        return tuple(state.spec.feed_id for state in self._markets)

    def tick(self, publish_time: int, dt: float) -> list[PriceUpdate]:
        """Advance every market by ``dt`` seconds and return their new prices.

        The first tick publishes the starting prices as they are.
        """
        first, self._first_tick = self._first_tick, False
        return [self._advance(state, publish_time, 0.0 if first else dt, first) for state in self._markets]

    def _advance(self, state: _MarketState, publish_time: int, dt: float, first: bool) -> PriceUpdate:
        sigma = state.spec.annual_volatility
        years = dt / SECONDS_PER_YEAR
        shock = self._rng.gauss(0.0, 1.0)
        state.price *= math.exp(-0.5 * sigma * sigma * years + sigma * math.sqrt(years) * shock)
        conf_fraction = state.spec.confidence_bps / 10_000 * math.exp(0.3 * self._rng.gauss(0.0, 1.0))
        conf = state.price * conf_fraction
        if first:
            state.ema_price, state.ema_conf = state.price, conf
        else:
            weight = 1 - math.exp(-dt / self._ema_window)
            state.ema_price += weight * (state.price - state.ema_price)
            state.ema_conf += weight * (conf - state.ema_conf)
        return PriceUpdate(
            feed_id=state.spec.feed_id,
            price=self._pyth_price(state.price, conf, publish_time),
            ema_price=self._pyth_price(state.ema_price, state.ema_conf, publish_time),
            source=SIMULATED_SOURCE,
        )

    def _pyth_price(self, price: float, conf: float, publish_time: int) -> PythPrice:
        return PythPrice(
            price=max(1, to_mantissa(price, self._expo)),
            conf=max(1, to_mantissa(conf, self._expo)),
            expo=self._expo,
            publish_time=publish_time,
        )
