"""Domain state → wire views, with display rounding in one place.

The domain computes exactly (rationals where a division is involved); what
goes on the wire is rounded here, once, to places a reader can use: ratios
to 6 places, prices derived by division to 8, percentages to 4, and money
that funding accrual touches (funding owed, equity) to the chain's 18.
Inputs (sizes, collateral, entry prices) go out with every digit they have.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from perpstream.domain import MarketParams, Position, PositionRisk, Side, position_risk
from perpstream.chain.events import StoredPosition
from perpstream.protocol import Candidate, PositionView

__all__ = [
    "candidate_view",
    "position_from_stored",
    "position_view",
    "round_places",
]

def round_places(value: Decimal | None, places: int) -> Decimal | None:
    """Round half-even to ``places`` decimals, then drop trailing zeros on the wire."""
    if value is None:
        return None
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def position_from_stored(stored: StoredPosition) -> Position:
    """A position as the store keeps it → the domain's position."""
    return Position(
        position_id=stored.position_id,
        account=stored.account,
        market_id=stored.market_id,
        side=Side.from_is_long(stored.is_long),
        size=stored.size,
        collateral=stored.collateral,
        entry_price=stored.entry_price,
        entry_funding_index=stored.entry_funding_index,
    )


def position_view(
    position: Position,
    *,
    price: Decimal | None,
    confidence: Decimal,
    funding_index: Decimal,
    params: MarketParams,
    stale: bool,
) -> PositionView:
    """One position for the positions stream; risk fields are null without a price."""
    if price is None:
        return PositionView(
            position_id=position.position_id, market_id=position.market_id, side=position.side.value,
            size=position.size, entry_price=position.entry_price, mark_price=None,
            collateral=position.collateral, unrealized_pnl=None, funding_owed=None, equity=None,
            leverage=None, health_factor=None, liquidation_price=None, stale=True,
        )
    risk = position_risk(position, price, confidence, funding_index, params)
    return PositionView(
        position_id=position.position_id,
        market_id=position.market_id,
        side=position.side.value,
        size=position.size,
        entry_price=position.entry_price,
        mark_price=price,
        collateral=position.collateral,
        unrealized_pnl=round_places(risk.unrealized_pnl, 18),
        funding_owed=round_places(risk.funding_owed, 18),
        equity=round_places(risk.equity, 18),
        leverage=round_places(risk.leverage, 6),
        health_factor=round_places(risk.health_factor, 6),
        liquidation_price=round_places(risk.liquidation_price, 8),
        stale=stale,
    )


def candidate_view(
    position: Position,
    risk: PositionRisk,
    *,
    liquidatable: bool,
) -> Candidate:
    """One liquidation candidate for the liquidations stream."""
    return Candidate(
        position_id=position.position_id,
        user_address=position.account,
        market_id=position.market_id,
        side=position.side.value,
        size=position.size,
        health_factor=round_places(risk.health_factor, 6),
        liquidation_price=round_places(risk.liquidation_price, 8),
        mark_price=risk.mark_price,
        distance_pct=round_places(risk.distance_pct, 4),
        potential_reward=round_places(risk.potential_reward, 8) or Decimal(0),
        liquidatable=liquidatable,
    )

