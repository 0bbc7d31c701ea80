"""The list of every open position, paged by position id: one rule wherever it is served.

The single process builds the rows from its markets' state when asked; a
core publishes each market's rows for its edges (``perpstream.bus``), and
an edge pages through what the core published. Both answer with
:func:`page_of`, so a client sees the same body from either.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import attrs

from perpstream.protocol import PositionView, to_data
from perpstream.services.queries import MarketQueries, MarketUnavailable

__all__ = [
    "MAX_PAGE",
    "BadPageRequest",
    "OpenPositions",
    "OpenPositionsSource",
    "OpenPositionsUnavailable",
    "PageRequest",
    "Row",
    "from_markets",
    "market_rows",
    "page_of",
]

MAX_PAGE = 1000
# A position id, as every page's ``next`` gives it: the contract's bytes32 id in hex.
_CURSOR = re.compile(r"0x[0-9a-fA-F]{64}")

#: One open position as the list serves it: ``user_address`` and the position's view, JSON-ready.
Row = dict[str, Any]


@attrs.frozen
class OpenPositions:
    """Every open position by its id, priced at ``ts`` (epoch ms).

    ``rows`` maps each position id to a function making its row, so that a
    page converts only the positions it shows: the single process prices
    every position per request but renders at most a page of them.
    """

    rows: Mapping[str, Callable[[], Row]]
    ts: int

    @classmethod
    def of_rows(cls, rows: list[Row], ts: int) -> OpenPositions:
        """The list from rows already made (as an edge reads them from the bus)."""
        return cls({str(row["position_id"]): partial(_itself, row) for row in rows}, ts)


def _itself(row: Row) -> Row:
    return row


def _row(address: str, view: PositionView) -> Row:
    return {"user_address": address, **to_data(view)}


class OpenPositionsUnavailable(RuntimeError):
    """The list cannot be answered right now: ``code`` and ``message`` for the 503."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: Where a server gets the list: raises :class:`OpenPositionsUnavailable`.
OpenPositionsSource = Callable[[], Awaitable[OpenPositions]]


class BadPageRequest(ValueError):
    """A ``limit`` or ``after`` that is not one; the message names the key, the value and what is allowed."""


@attrs.frozen
class PageRequest:
    limit: int = 100
    after: str = ""

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> PageRequest:
        raw_limit = args.get("limit", "100")
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            raise BadPageRequest(f"limit must be an integer from 1 to {MAX_PAGE}, got {raw_limit[:80]!r}")
        after = args.get("after", "")
        if after and not _CURSOR.fullmatch(after):
            raise BadPageRequest(
                f"after must be a position id (0x and 64 hex digits, a page's next), got {after[:80]!r}")
        return cls(limit, after.lower())


def market_rows(queries: MarketQueries, market_id: str) -> list[Row]:
    """One market's open positions, priced now (raises ``MarketUnavailable`` while it restarts)."""
    return [_row(address, view) for address, view in queries.positions(market_id)]


async def from_markets(queries: MarketQueries, market_ids: list[str], *, now_ms: Callable[[], int],
                       restart_wait_s: float) -> OpenPositions:
    """The single process's list: every market's state now, waiting a moment for one that restarts."""
    await queries.wait_available(market_ids, restart_wait_s)
    rows: dict[str, Callable[[], Row]] = {}
    for market_id in market_ids:
        try:
            positions = queries.positions(market_id)
        except MarketUnavailable:
            raise OpenPositionsUnavailable("market_unavailable", f"market {market_id} is unavailable") from None
        rows.update((view.position_id, partial(_row, address, view)) for address, view in positions)
    return OpenPositions(rows, now_ms())


def page_of(listed: OpenPositions, request: PageRequest) -> dict[str, object]:
    """The page after ``request.after``: ``positions``, ``total``, ``next`` (None on the last page), ``ts``.

    ``ts`` is when the rows were priced (epoch ms): now in one process, the
    oldest market's publication on an edge.
    """
    remaining = sorted(position_id for position_id in listed.rows if position_id > request.after)
    page = remaining[:request.limit]
    return {
        "positions": [listed.rows[position_id]() for position_id in page],
        "total": len(listed.rows),
        "next": page[-1] if len(remaining) > request.limit else None,
        "ts": listed.ts,
    }
