"""Mailbox messages between the service's actors.

Requests carry their :class:`actors.Reply`; everything else is fire-and-forget.
Readers that only want values use the query interface
(:mod:`perpstream.services.queries`) instead of a request.
"""

from __future__ import annotations

import attrs

from actors import Reply
from perpstream.chain.events import IndexedEvent
from perpstream.domain import PriceUpdate
from perpstream.protocol import Candidate, PositionView

__all__ = [
    "ChainDelivery",
    "GetUserPositions",
    "MarketCandidates",
    "PriceTick",
    "UserPositions",
]


@attrs.frozen
class PriceTick:
    """A new oracle price for a market (feed → MarketActor)."""

    update: PriceUpdate


@attrs.frozen
class ChainDelivery:
    """An indexed chain event (indexer → MarketActor).

    ``applied`` is answered once the market has applied it and its messages
    are in the stream history: only then may the indexer forget it.
    """

    indexed: IndexedEvent
    applied: Reply[None] | None = None


@attrs.frozen
class UserPositions:
    """An account's positions in one market, priced now."""

    market_id: str
    views: tuple[PositionView, ...]


@attrs.frozen
class GetUserPositions:
    address: str
    reply: Reply[UserPositions]


@attrs.frozen
class MarketCandidates:
    """One market's most-at-risk positions and its totals."""

    candidates: tuple[Candidate, ...]  # lowest health first
    total_at_risk: int
    total_liquidatable: int


