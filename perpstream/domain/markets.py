"""The risk and funding parameters of one market.

Built by the configuration layer; validated here as well, because the risk
math relies on them (a maintenance margin ratio of 1/1.2 or more would make
the warning level unreachable and the liquidation index's algebra divide by a
non-positive number).
"""

from __future__ import annotations

from decimal import Decimal

import attrs

__all__ = ["MarketParams"]

_HIGHEST_LEVEL = Decimal("1.2")  # the warning level, the largest health threshold


def _decimal(_: object, attribute: attrs.Attribute[Decimal], value: object) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"{attribute.name} must be a finite Decimal, got {value!r}")


@attrs.frozen
class MarketParams:
    """What the domain needs to know about a market (all ratios are fractions, not %)."""

    market_id: str
    base: str
    maintenance_margin_ratio: Decimal = attrs.field(validator=_decimal)
    liquidation_fee_ratio: Decimal = attrs.field(validator=_decimal)
    min_keeper_fee: Decimal = attrs.field(validator=_decimal)
    max_keeper_fee: Decimal = attrs.field(validator=_decimal)
    max_leverage: Decimal = attrs.field(validator=_decimal)
    skew_scale: Decimal = attrs.field(validator=_decimal)
    max_funding_rate_per_hour: Decimal = attrs.field(validator=_decimal)

    def __attrs_post_init__(self) -> None:
        problems = []
        if not self.market_id or self.market_id != self.market_id.lower():
            problems.append(f"market_id must be a non-empty lower-case id, got {self.market_id!r}")
        mmr = self.maintenance_margin_ratio
        if not (mmr > 0 and mmr * _HIGHEST_LEVEL < 1):
            problems.append(f"maintenance_margin_ratio must be in (0, 1/1.2), got {mmr}")
        if self.liquidation_fee_ratio < 0:
            problems.append("liquidation_fee_ratio must be >= 0")
        if not 0 <= self.min_keeper_fee <= self.max_keeper_fee:
            problems.append("keeper fees must satisfy 0 <= min_keeper_fee <= max_keeper_fee")
        if self.max_leverage <= 0:
            problems.append("max_leverage must be > 0")
        if self.skew_scale <= 0:
            problems.append("skew_scale must be > 0")
        if self.max_funding_rate_per_hour < 0:
            problems.append("max_funding_rate_per_hour must be >= 0")
        if problems:
            raise ValueError(f"market {self.market_id!r}: " + "; ".join(problems))
