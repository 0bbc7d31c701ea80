"""Chain deliveries → the positions stream's event messages."""

from __future__ import annotations

from perpstream import protocol
from perpstream.chain.events import (
    IndexedEvent,
    PositionClosed,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    StoredPosition,
)
from perpstream.domain import Position

__all__ = ["position_event"]

_MESSAGE = {
    PositionOpened: protocol.PositionOpened,
    PositionModified: protocol.PositionModified,
    PositionClosed: protocol.PositionClosed,
    PositionLiquidated: protocol.PositionLiquidated,
}


def position_event(indexed: IndexedEvent, position: Position | None) -> protocol.PositionEvent:
    """The wire message for one delivery of a position event.

    ``position`` is the position's state after the delivery was applied, or
    its last state when the delivery closed it; it fills in side and size
    where the event itself does not carry them. A ``reverted`` delivery becomes ``position_reverted``
    naming the undone event's type.
    """
    event = indexed.event
    meta = event.meta
    fields: dict[str, object] = {
        "position_id": event.position_id,  # type: ignore[union-attr]
        "market_id": getattr(event, "market_id", None) or (position.market_id if position else ""),
        "event": protocol.EventRef(
            block_number=meta.block_number, block_hash=meta.block_hash,
            tx_hash=meta.tx_hash, log_index=meta.log_index,
        ),
        "finality": indexed.finality,
    }
    if isinstance(event, PositionOpened):
        fields.update(side="long" if event.is_long else "short", size=event.size,
                      collateral=event.collateral, entry_price=event.entry_price)
    elif isinstance(event, PositionModified):
        fields.update(size=event.size, collateral=event.collateral, entry_price=event.entry_price)
    elif isinstance(event, PositionClosed):
        fields.update(price=event.exit_price, realized_pnl=event.realized_pnl)
    elif isinstance(event, PositionLiquidated):
        fields.update(price=event.price, reward=event.reward, liquidator=event.liquidator)
    if position is not None:
        fields.setdefault("side", position.side.value)
        fields.setdefault("size", position.size)
    elif isinstance(indexed.restored, StoredPosition) and "side" not in fields:
        fields["side"] = indexed.restored.side
    if not fields["market_id"] and isinstance(indexed.restored, StoredPosition):
        fields["market_id"] = indexed.restored.market_id
    if indexed.finality == "reverted":
        return protocol.PositionReverted(reverted_type=_MESSAGE[type(event)].type, **fields)  # type: ignore[arg-type]
    return _MESSAGE[type(event)](**fields)  # type: ignore[arg-type]
