"""Where MarketActors rebuild their state from at start and after a restart.

The chain indexer's SQLite :class:`~perpstream.chain.store.PositionStore` is
the real source. :class:`MemoryPositionStore` is the same interface over
plain dictionaries, for the integration tests that run the whole tree on
trio's virtual clock (where a thread-backed chain cannot run).
"""

from __future__ import annotations

from typing import Protocol

from perpstream.chain.events import Cursor, StoredFunding, StoredPosition
from perpstream.chain.store import StoreSnapshot

__all__ = ["MemoryPositionStore", "PositionSource"]


class PositionSource(Protocol):
    def snapshot(self, market_id: str | None = None) -> StoreSnapshot:
        """Cursor, open positions, funding and ``delivered_through`` as of one commit."""
        ...


class MemoryPositionStore:
    """An in-memory position source with set-semantics updates.

    ``delivered_through`` is the outbox seq of the newest delivery its state
    reflects, as :attr:`StoreSnapshot.delivered_through` is for the real
    store; a test that fills the store by hand sets it to say which
    deliveries a market rebuilt from it must still apply.
    """

    def __init__(self) -> None:
        self.positions: dict[str, StoredPosition] = {}
        self.funding: dict[str, StoredFunding] = {}
        self.cursor: Cursor | None = None
        self.delivered_through = 0

    def put(self, position: StoredPosition) -> None:
        self.positions[position.position_id] = position

    def remove(self, position_id: str) -> None:
        self.positions.pop(position_id, None)

    def snapshot(self, market_id: str | None = None) -> StoreSnapshot:
        return StoreSnapshot(
            cursor=self.cursor,
            positions=[p for p in self.positions.values() if market_id in (None, p.market_id)],
            funding=[f for f in self.funding.values() if market_id in (None, f.market_id)],
            delivered_through=self.delivered_through,
        )
