"""A position's risk as the exchange contract sees it: the verdict a liquidator acts on.

``liquidate`` succeeds exactly when the contract's own integer arithmetic
(:mod:`~perpstream.domain.margin`) finds ``equity < maintenance`` at the
oracle price it is handed, with the funding index as last posted on chain.
So every field a liquidator reads here is evaluated at that one point: the
oracle's plain price ``P`` (no confidence band), the chain's funding index,
wad integers rounded where the contract rounds. ``health_factor`` is the
ratio of those same integers, so ``liquidatable`` and ``health_factor < 1``
are one statement; ``level`` classifies those integers by the warning
thresholds. The liquidation price is the price at which the exact equity
equals the maintenance margin with the same funding index; it differs from
the contract's integer boundary by at most a few wei of price.
"""

from __future__ import annotations

from decimal import Decimal

import attrs

from perpstream.domain.decimals import decimal_context, exact_context, from_wad, to_wad
from perpstream.domain.margin import ContractMargin, contract_margin, keeper_reward, pyth_price_to_wad
from perpstream.domain.markets import MarketParams
from perpstream.domain.positions import Position, Side
from perpstream.domain.prices import PythPrice
from perpstream.domain.risk import RiskLevel, classify_health

__all__ = ["ContractRisk", "contract_risk"]


@attrs.frozen
class ContractRisk:
    """The contract's margin of one position at one oracle price (wads, and decimals for the wire)."""

    margin: ContractMargin
    mark_price: Decimal
    level: RiskLevel
    health_factor: Decimal | None  # equity / maintenance; None when maintenance is 0 (dust)
    liquidation_price: Decimal
    potential_reward: Decimal

    @property
    def liquidatable(self) -> bool:
        return self.margin.liquidatable

    @property
    def equity(self) -> Decimal:
        return from_wad(self.margin.equity)

    @property
    def maintenance_margin(self) -> Decimal:
        return from_wad(self.margin.maintenance)

    @property
    def shortfall(self) -> Decimal:
        """How much equity is missing to the maintenance margin (0 when healthy)."""
        return from_wad(max(self.margin.maintenance - self.margin.equity, 0))


def contract_risk(position: Position, price: PythPrice, chain_funding_index: Decimal,
                  params: MarketParams) -> ContractRisk:
    """Evaluate ``position`` as ``liquidate`` would at ``price`` with the chain's funding index."""
    price_wad = pyth_price_to_wad(price.price, price.expo)
    margin = contract_margin(
        is_long=position.side is Side.LONG,
        size=to_wad(position.size),
        collateral=to_wad(position.collateral),
        entry_price=to_wad(position.entry_price),
        entry_funding_index=to_wad(position.entry_funding_index),
        funding_index=to_wad(chain_funding_index),
        price=price_wad,
        maintenance_margin_ratio=to_wad(params.maintenance_margin_ratio),
    )
    reward = keeper_reward(
        margin,
        liquidation_fee_ratio=to_wad(params.liquidation_fee_ratio),
        min_keeper_fee=to_wad(params.min_keeper_fee),
        max_keeper_fee=to_wad(params.max_keeper_fee),
    )
    mmr, size = params.maintenance_margin_ratio, position.size
    with exact_context():
        funding_owed = position.side.sign * size * (chain_funding_index - position.entry_funding_index)
        # equity(p) = maintenance(p): long (E·size − C + f) / (size(1 − mmr)), short (E·size + C − f) / (size(1 + mmr))
        if position.side is Side.LONG:
            value, per_unit = position.entry_price * size - position.collateral + funding_owed, size * (1 - mmr)
        else:
            value, per_unit = position.entry_price * size + position.collateral - funding_owed, size * (1 + mmr)
    with decimal_context():
        health = Decimal(margin.equity) / Decimal(margin.maintenance) if margin.maintenance > 0 else None
        liquidation_price = value / per_unit
    return ContractRisk(
        margin=margin,
        mark_price=from_wad(price_wad),
        level=classify_health(margin.equity, margin.maintenance),
        health_factor=health,
        liquidation_price=liquidation_price,
        potential_reward=from_wad(reward),
    )
