"""One market's open positions, with open interest and liquidation index kept in step.

Every position event has to change three structures (the positions, the
open-interest sums, the liquidation index) and per-account lookups; doing it
in one place means they can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterator

from perpstream.domain.liquidation_index import LiquidationIndex
from perpstream.domain.markets import MarketParams
from perpstream.domain.open_interest import OpenInterest
from perpstream.domain.positions import Position

__all__ = ["PositionBook"]


class PositionBook:
    """The open positions of one market, by id and by account."""

    def __init__(self, params: MarketParams) -> None:
        self.params = params
        self.open_interest = OpenInterest()
        self.liquidation_index = LiquidationIndex(params.maintenance_margin_ratio)
        self._positions: dict[str, Position] = {}
        self._by_account: dict[str, dict[str, Position]] = {}

    def __len__(self) -> int:
        return len(self._positions)

    def __contains__(self, position_id: object) -> bool:
        return position_id in self._positions

    def __iter__(self) -> Iterator[Position]:
        return iter(self._positions.values())

    def get(self, position_id: str) -> Position | None:
        return self._positions.get(position_id)

    def of_account(self, account: str) -> list[Position]:
        """The account's positions in this market, in opening order.

        ``account`` must be in the form the positions carry (EIP-55).
        """
        return list(self._by_account.get(account, {}).values())

    def open(self, position: Position) -> None:
        """A ``PositionOpened`` (``ValueError`` for a duplicate or another market)."""
        if position.market_id != self.params.market_id:
            raise ValueError(f"position of market {position.market_id!r} in book {self.params.market_id!r}")
        if position.position_id in self._positions:
            raise ValueError(f"position {position.position_id} is already open")
        self.liquidation_index.insert(position)
        self.open_interest = self.open_interest.opened(position)
        self._positions[position.position_id] = position
        self._by_account.setdefault(position.account, {})[position.position_id] = position

    def modify(self, position: Position) -> Position:
        """A ``PositionModified``: store the new state, return the previous one.

        ``KeyError`` if the position is not open; ``ValueError`` if the new
        state changes the side, owner or market.
        """
        before = self._positions[position.position_id]
        if (before.side, before.account, before.market_id) != (position.side, position.account, position.market_id):
            raise ValueError(f"position {position.position_id}: side, account and market cannot change")
        self.liquidation_index.update(position)
        self.open_interest = self.open_interest.modified(before, position)
        self._positions[position.position_id] = position
        self._by_account[position.account][position.position_id] = position
        return before

    def close(self, position_id: str) -> Position:
        """A ``PositionClosed`` or ``PositionLiquidated``: forget it, return its last state."""
        position = self._positions.pop(position_id)
        self.liquidation_index.remove(position_id)
        self.open_interest = self.open_interest.closed(position)
        owned = self._by_account[position.account]
        del owned[position_id]
        if not owned:
            del self._by_account[position.account]
        return position
