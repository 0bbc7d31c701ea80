"""How one event changes the derived state: pure functions, no storage.

Each event touches exactly one record — a position (by id) or a market's
funding — so the transition is ``next_record(event, current) -> new``. The
store keeps ``current`` as undo information while the event's block can
still be reorged away.
"""

from __future__ import annotations

from typing import Literal

import attrs

from perpstream.chain.events import (
    ChainEvent,
    FundingUpdated,
    PositionClosed,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    StoredFunding,
    StoredPosition,
    StoredRecord,
)

__all__ = ["RecordKey", "InconsistentEventError", "record_key", "next_record"]


@attrs.frozen
class RecordKey:
    kind: Literal["position", "funding"]
    id: str  # position id or market id


class InconsistentEventError(ValueError):
    """An event that does not fit the state, e.g. a close of an unknown position.

    It happens when indexing starts after a position was opened
    (``start_block`` too late) or when the chain is not the expected contract.
    """


def record_key(event: ChainEvent) -> RecordKey:
    if isinstance(event, FundingUpdated):
        return RecordKey("funding", event.market_id)
    return RecordKey("position", event.position_id)


def next_record(event: ChainEvent, current: StoredRecord | None) -> StoredRecord | None:
    """The record after ``event``; None when the event removes it."""
    if isinstance(event, FundingUpdated):
        return StoredFunding(
            market_id=event.market_id,
            rate_per_hour=event.funding_rate_per_hour,
            funding_index=event.funding_index,
            timestamp=event.timestamp,
            block_number=event.meta.block_number,
        )
    if isinstance(event, PositionOpened):
        if current is not None:
            raise InconsistentEventError(f"position {event.position_id} is already open")
        return StoredPosition(
            position_id=event.position_id,
            account=event.account,
            market_id=event.market_id,
            is_long=event.is_long,
            size=event.size,
            collateral=event.collateral,
            entry_price=event.entry_price,
            entry_funding_index=event.entry_funding_index,
            opened_block=event.meta.block_number,
        )
    if not isinstance(current, StoredPosition):
        raise InconsistentEventError(f"position {event.position_id} is not open")
    if isinstance(event, PositionModified):
        return attrs.evolve(
            current,
            size=event.size,
            collateral=event.collateral,
            entry_price=event.entry_price,
            entry_funding_index=event.entry_funding_index,
        )
    if isinstance(event, (PositionClosed, PositionLiquidated)):
        if (event.account, event.market_id) != (current.account, current.market_id):
            raise InconsistentEventError(
                f"position {event.position_id} belongs to {current.account} on "
                f"{current.market_id}, the event says {event.account} on {event.market_id}"
            )
        return None
    raise TypeError(f"not a chain event: {event!r}")
