"""Domain state → wire views, with display rounding in one place.

The domain computes exactly (rationals where a division is involved); what
goes on the wire is rounded here, once, to places a reader can use: ratios
to 6 places, prices derived by division to 8, percentages to 4, and money
that funding accrual touches (funding owed, equity) to the chain's 18.
Inputs (sizes, collateral, entry prices) go out with every digit they have.
A contract health factor is rounded down, so a position the contract would
liquidate never shows a health of 1.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import TypeAlias

from perpstream.chain.events import EventMeta, Finality, StoredPosition
from perpstream.domain import MarketParams, Position, PositionRisk, PriceUpdate, Side, decimal_context, position_risk
from perpstream.domain.contract_risk import ContractRisk, contract_risk
from perpstream.protocol import Candidate, EventRef, PositionView

__all__ = [
    "Settlement",
    "candidate_view",
    "health_places",
    "position_from_stored",
    "position_view",
    "round_places",
    "update_data_hex",
]

#: A position's last chain event and its finality (None before any is known).
Settlement: TypeAlias = tuple[EventMeta | None, Finality | None]

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


def _ref(meta: EventMeta | None) -> EventRef | None:
    if meta is None:
        return None
    return EventRef(block_number=meta.block_number, block_hash=meta.block_hash,
                    tx_hash=meta.tx_hash, log_index=meta.log_index)


def update_data_hex(update: PriceUpdate | None) -> tuple[str, ...]:
    """The oracle update a transaction submits with this price, as 0x-hex strings."""
    return () if update is None else tuple("0x" + blob.hex() for blob in update.update_data)


def health_places(value: Decimal | None) -> Decimal | None:
    """A contract health factor to 6 places, rounded down so that ``< 1`` survives rounding."""
    if value is None:
        return None
    return value.quantize(Decimal("0.000001"), rounding=ROUND_FLOOR)


def position_view(
    position: Position,
    *,
    update: PriceUpdate | None,
    funding_index: Decimal,
    chain_funding_index: Decimal,
    params: MarketParams,
    stale: bool,
    settlement: Settlement,
) -> PositionView:
    """One position for the positions stream; risk fields are null without a price.

    Money (PnL, funding owed, equity, leverage) accrues funding to now
    (``funding_index``); ``health_factor``, ``liquidation_price`` and
    ``liquidatable`` are the contract's view (:mod:`~perpstream.domain.contract_risk`).
    """
    last_event, finality = settlement
    common = {
        "position_id": position.position_id, "market_id": position.market_id, "side": position.side.value,
        "size": position.size, "entry_price": position.entry_price, "collateral": position.collateral,
        "last_event": _ref(last_event), "finality": finality,
    }
    if update is None:
        return PositionView(
            **common, mark_price=None, unrealized_pnl=None, funding_owed=None, equity=None,  # type: ignore[arg-type]
            leverage=None, health_factor=None, liquidation_price=None, stale=True,
        )
    price = update.price.value
    risk = position_risk(position, price, update.price.confidence, funding_index, params)
    verdict = contract_risk(position, update.price, chain_funding_index, params)
    return PositionView(
        **common,  # type: ignore[arg-type]
        mark_price=price,
        unrealized_pnl=round_places(risk.unrealized_pnl, 18),
        funding_owed=round_places(risk.funding_owed, 18),
        equity=round_places(risk.equity, 18),
        leverage=round_places(risk.leverage, 6),
        health_factor=health_places(verdict.health_factor),
        liquidation_price=round_places(verdict.liquidation_price, 8),
        stale=stale,
        health_factor_conservative=round_places(risk.health_factor, 6),
        liquidatable=verdict.liquidatable and not stale,
    )


def candidate_view(
    position: Position,
    verdict: ContractRisk,
    conservative: PositionRisk,
    *,
    stale: bool,
    update: PriceUpdate,
) -> Candidate:
    """One liquidation candidate for the liquidations stream (the contract's view at P)."""
    with decimal_context():
        distance = abs(verdict.mark_price - verdict.liquidation_price) * 100 / verdict.mark_price
    return Candidate(
        position_id=position.position_id,
        user_address=position.account,
        market_id=position.market_id,
        side=position.side.value,
        size=position.size,
        health_factor=health_places(verdict.health_factor),
        liquidation_price=round_places(verdict.liquidation_price, 8),
        mark_price=verdict.mark_price,
        distance_pct=round_places(distance, 4),
        potential_reward=verdict.potential_reward,
        liquidatable=verdict.liquidatable and not stale,
        health_factor_conservative=round_places(conservative.health_factor, 6),
        equity=verdict.equity,
        maintenance_margin=verdict.maintenance_margin,
        update_data=update_data_hex(update),
    )
