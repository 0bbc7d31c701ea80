"""Decoded contract events and the records derived from them.

Quantities are exact Decimals (the contract's 18-decimal integers divided by
10^18); ids are strings in one canonical form each: position ids and hashes as
lower-case 0x-hex, accounts as EIP-55 checksummed addresses, market ids as the
configured string.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, TypeAlias

import attrs

__all__ = [
    "EventMeta",
    "PositionOpened",
    "PositionModified",
    "PositionClosed",
    "PositionLiquidated",
    "FundingUpdated",
    "ChainEvent",
    "PositionEvent",
    "StoredPosition",
    "StoredFunding",
    "StoredRecord",
    "Cursor",
    "Finality",
    "IndexedEvent",
]

Finality: TypeAlias = Literal["pending", "final", "reverted"]
Side: TypeAlias = Literal["long", "short"]


@attrs.frozen
class EventMeta:
    """Where a log sits on chain; ``(tx_hash, log_index)`` identifies it to clients."""

    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int

    @property
    def order(self) -> tuple[int, int]:
        """The order events are applied in."""
        return (self.block_number, self.log_index)


@attrs.frozen
class PositionOpened:
    meta: EventMeta
    position_id: str
    account: str
    market_id: str
    is_long: bool
    size: Decimal
    collateral: Decimal
    entry_price: Decimal
    entry_funding_index: Decimal


@attrs.frozen
class PositionModified:
    meta: EventMeta
    position_id: str
    size: Decimal
    collateral: Decimal
    entry_price: Decimal
    entry_funding_index: Decimal


@attrs.frozen
class PositionClosed:
    meta: EventMeta
    position_id: str
    account: str
    market_id: str
    exit_price: Decimal
    realized_pnl: Decimal


@attrs.frozen
class PositionLiquidated:
    meta: EventMeta
    position_id: str
    account: str
    liquidator: str
    market_id: str
    price: Decimal
    reward: Decimal


@attrs.frozen
class FundingUpdated:
    meta: EventMeta
    market_id: str
    funding_rate_per_hour: Decimal
    funding_index: Decimal
    timestamp: int  # seconds since the Unix epoch, as posted by the keeper


PositionEvent: TypeAlias = PositionOpened | PositionModified | PositionClosed | PositionLiquidated
ChainEvent: TypeAlias = PositionEvent | FundingUpdated


@attrs.frozen
class StoredPosition:
    """An open position as derived from the events indexed so far."""

    position_id: str
    account: str
    market_id: str
    is_long: bool
    size: Decimal
    collateral: Decimal
    entry_price: Decimal
    entry_funding_index: Decimal
    opened_block: int
    #: The newest event that produced this state, and whether it is final yet
    #: (``confirmations`` blocks deep): what ``positions_update`` reports.
    last_event: EventMeta | None = None
    finality: Finality = "pending"

    @property
    def side(self) -> Side:
        return "long" if self.is_long else "short"


@attrs.frozen
class StoredFunding:
    """A market's funding as last posted on chain."""

    market_id: str
    rate_per_hour: Decimal
    funding_index: Decimal
    timestamp: int
    block_number: int


StoredRecord: TypeAlias = StoredPosition | StoredFunding


@attrs.frozen
class Cursor:
    """The last block whose events are all applied."""

    block_number: int
    block_hash: str


@attrs.frozen
class IndexedEvent:
    """One delivery to the indexer's sink.

    Every event is delivered as ``pending`` when first applied and again as
    ``final`` once ``confirmations`` blocks are mined on top of its block; if
    a reorg undoes it first it is delivered as ``reverted`` instead, newest
    first, with ``restored`` holding the record (position or market funding)
    as it was before the event — None when the record did not exist.

    Consumers apply ``pending`` and ``reverted`` deliveries as "set the record
    to this state" and treat ``final`` as a confirmation only. Deliveries are
    at least once: after a crash the undelivered tail is delivered again, in
    the same order, with the same ``seq``; a consumer that rebuilt from a
    snapshot skips those with ``seq <= snapshot.delivered_through``.
    """

    event: ChainEvent
    finality: Finality
    restored: StoredRecord | None = None
    #: The record (position or market funding) as it was just before this
    #: event, on every delivery (pending, final and reverted alike), so a
    #: consumer can describe an event whose position is already gone.
    before: StoredRecord | None = None
    #: The delivery's place in the store's outbox: strictly increasing over
    #: the life of the data file. A snapshot says which deliveries it
    #: reflects (:attr:`StoreSnapshot.delivered_through`); consumers apply
    #: exactly the deliveries after that, whatever their block heights.
    seq: int = 0
