"""Positions ordered by liquidation price, so a tick finds who crossed a level by bisection.

Derivation. With ``size > 0``, collateral ``C``, entry price ``E``, entry
funding index ``I_e``, funding index now ``I`` and ``p = P_risk``, a position
is below level ``k`` when ``equity(p) < k × maintenance_margin(p)``:

- long:  ``C + size(p − E) − size(I − I_e) < k·size·p·mmr``
         ⟺ ``C/size + I_e − E < I − p(1 − k·mmr)``
- short: ``C − size(p − E) + size(I − I_e) < k·size·p·mmr``
         ⟺ ``E + C/size − I_e < p(1 + k·mmr) − I``

(only ``size > 0`` was divided by, so this holds for every ``p``). The left
side is a *key* fixed while the position is unchanged; the right side is a
*bound* that depends only on the market's price, confidence, funding index
and mmr. Funding drift moves the bound, never the keys. Both keys grow with
health, so each side is kept sorted by key, riskiest first, and the
positions below level ``k`` are exactly a prefix whose length is one
bisection: ``O(log n)`` per level, ``O(k)`` to read the ``k`` positions.
The inequality is strict: a position with health exactly ``k`` is not below
``k``, matching :func:`~perpstream.domain.risk.classify_health`.

Exactness. ``C/size`` rarely terminates in decimal, so keys and bounds are
exact rationals. A sorted entry is ``(floor(key·2⁶⁴), key, position_id)``:
the integer settles almost every comparison at C speed (``floor`` is
monotone, so the lexicographic order is the order of ``key``), the
``Fraction`` settles exact near-ties, and the id breaks true ties
deterministically. The index and a position-by-position exact evaluation
therefore always agree, including on the boundaries.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator
from decimal import Decimal
from fractions import Fraction
from operator import itemgetter

from sortedcontainers import SortedList

from perpstream.domain.positions import Position, Side
from perpstream.domain.risk import ALERT_LEVELS, RiskLevel, risk_price

__all__ = ["IndexQuery", "LiquidationIndex", "PositionsView", "StaleQueryError"]

_SCALE_BITS = 64

# (floor(key × 2**64), key, position_id); smaller = riskier.
_Entry = tuple[int, Fraction, str]
# (floor(bound × 2**64), bound): entries comparing below it are below the level.
_Probe = tuple[int, Fraction]

_LEVEL_FACTORS = tuple(Fraction(level.threshold) for level in ALERT_LEVELS)  # type: ignore[arg-type]


_position_id_of = itemgetter(2)  # of an _Entry


class StaleQueryError(RuntimeError):
    """An :class:`IndexQuery` was used after its index changed."""


def _entry(position: Position) -> _Entry:
    """The sorted entry of a position (see the module docstring for the key)."""
    c_num, c_den = position.collateral.as_integer_ratio()
    s_num, s_den = position.size.as_integer_ratio()
    e_num, e_den = position.entry_price.as_integer_ratio()
    i_num, i_den = position.entry_funding_index.as_integer_ratio()
    # C/size = (c_num·s_den)/(c_den·s_num); one common denominator, one gcd.
    collateral_per_unit = c_num * s_den * i_den * e_den
    denominator = c_den * s_num * i_den * e_den
    entry_index = i_num * c_den * s_num * e_den
    entry_price = e_num * c_den * s_num * i_den
    if position.side is Side.LONG:
        numerator = collateral_per_unit + entry_index - entry_price
    else:
        numerator = collateral_per_unit - entry_index + entry_price
    return ((numerator << _SCALE_BITS) // denominator, Fraction(numerator, denominator), position.position_id)


def _probe(bound: Fraction) -> _Probe:
    return ((bound.numerator << _SCALE_BITS) // bound.denominator, bound)


class LiquidationIndex:
    """The open positions of one market, ordered for liquidation scanning.

    Stores keys, not positions (the caller owns the positions). ``insert``,
    ``update`` and ``remove`` are ``O(log n)``; :meth:`query` is
    ``O(log n)`` and its views are lazy.
    """

    def __init__(self, maintenance_margin_ratio: Decimal) -> None:
        self._mmr = Fraction(maintenance_margin_ratio)
        if not (0 < self._mmr and self._mmr * max(_LEVEL_FACTORS) < 1):
            raise ValueError(f"maintenance_margin_ratio must be in (0, 1/1.2), got {maintenance_margin_ratio}")
        self._lists: dict[Side, SortedList] = {Side.LONG: SortedList(), Side.SHORT: SortedList()}
        self._entries: dict[Side, dict[str, _Entry]] = {Side.LONG: {}, Side.SHORT: {}}
        self._version = 0

    def __len__(self) -> int:
        return len(self._entries[Side.LONG]) + len(self._entries[Side.SHORT])

    def __contains__(self, position_id: object) -> bool:
        return position_id in self._entries[Side.LONG] or position_id in self._entries[Side.SHORT]

    def insert(self, position: Position) -> None:
        """Add a newly opened position (``ValueError`` if its id is present)."""
        if position.position_id in self:
            raise ValueError(f"position {position.position_id} is already indexed")
        entry = _entry(position)
        self._lists[position.side].add(entry)
        self._entries[position.side][position.position_id] = entry
        self._version += 1

    def update(self, position: Position) -> None:
        """Replace an indexed position by its new state (``KeyError`` if absent)."""
        self.remove(position.position_id)
        self.insert(position)

    def remove(self, position_id: str) -> None:
        """Drop a closed or liquidated position (``KeyError`` if absent)."""
        for side, entries in self._entries.items():
            entry = entries.pop(position_id, None)
            if entry is not None:
                self._lists[side].remove(entry)
                self._version += 1
                return
        raise KeyError(position_id)

    def query(self, mark_price: Decimal, confidence: Decimal, funding_index: Decimal) -> IndexQuery:
        """Where every level's boundary lies at this price, confidence and funding index.

        ``ValueError`` unless ``mark_price > 0`` and ``confidence ≥ 0``.
        """
        index_now = Fraction(funding_index)
        p_long = Fraction(risk_price(Side.LONG, mark_price, confidence))
        p_short = Fraction(risk_price(Side.SHORT, mark_price, confidence))
        probes = {
            Side.LONG: tuple(_probe(index_now - p_long * (1 - k * self._mmr)) for k in _LEVEL_FACTORS),
            Side.SHORT: tuple(_probe(p_short * (1 + k * self._mmr) - index_now) for k in _LEVEL_FACTORS),
        }
        return IndexQuery(self, probes, p_long, p_short, index_now)


class PositionsView(Collection[str]):
    """Position ids in a contiguous run of each side's order (riskiest first), longs then shorts."""

    def __init__(self, query: IndexQuery, ranges: dict[Side, tuple[int, int]], levels: frozenset[RiskLevel]) -> None:
        self._query = query
        self._ranges = ranges
        self._levels = levels

    def __len__(self) -> int:
        self._query._check()
        return sum(stop - start for start, stop in self._ranges.values())

    def __iter__(self) -> Iterator[str]:
        self._query._check()
        for side, (start, stop) in self._ranges.items():
            yield from map(_position_id_of, self._query._index._lists[side].islice(start, stop))

    def __contains__(self, position_id: object) -> bool:
        if not isinstance(position_id, str) or position_id not in self._query._index:
            self._query._check()
            return False
        return self._query.level_of(position_id) in self._levels

    def side(self, side: Side) -> Iterator[str]:
        """The ids of one side only, riskiest first."""
        self._query._check()
        start, stop = self._ranges[side]
        return map(_position_id_of, self._query._index._lists[side].islice(start, stop))


class IndexQuery:
    """The state of every position's level at one price: boundaries plus lazy views.

    Valid until the index next changes; using it afterwards raises
    :class:`StaleQueryError` rather than returning a wrong answer.
    """

    def __init__(
        self,
        index: LiquidationIndex,
        probes: dict[Side, tuple[_Probe, ...]],
        long_risk_price: Fraction,
        short_risk_price: Fraction,
        funding_index: Fraction,
    ) -> None:
        self._index = index
        self._version = index._version
        self._probes = probes
        self._long_risk_price = long_risk_price
        self._short_risk_price = short_risk_price
        self._funding_index = funding_index
        # boundaries[side][i]: how many of that side are below ALERT_LEVELS[i].
        self.boundaries: dict[Side, tuple[int, ...]] = {
            side: tuple(index._lists[side].bisect_left(probe) for probe in side_probes)
            for side, side_probes in probes.items()
        }

    def _check(self) -> None:
        if self._index._version != self._version:
            raise StaleQueryError("the liquidation index changed since this query")

    def _level_range(self, side: Side, level: RiskLevel) -> tuple[int, int]:
        """The run of ``side``'s order whose positions are exactly at ``level``."""
        bounds = self.boundaries[side]
        if level is RiskLevel.SAFE:
            return bounds[0], len(self._index._entries[side])
        i = ALERT_LEVELS.index(level)
        return (bounds[i + 1] if i + 1 < len(bounds) else 0), bounds[i]

    def crossed(self, level: RiskLevel) -> PositionsView:
        """Positions with health below ``level``'s threshold (at that level or worse)."""
        if level is RiskLevel.SAFE:
            raise ValueError("every position is at SAFE or worse; ask for a level with a threshold")
        i = ALERT_LEVELS.index(level)
        ranges = {side: (0, bounds[i]) for side, bounds in self.boundaries.items()}
        return PositionsView(self, ranges, frozenset(ALERT_LEVELS[i:]))

    def at(self, level: RiskLevel) -> PositionsView:
        """Positions at exactly ``level`` (SAFE included)."""
        ranges = {side: self._level_range(side, level) for side in self.boundaries}
        return PositionsView(self, ranges, frozenset({level}))

    def count(self, level: RiskLevel) -> int:
        """How many positions are at ``level`` or worse (every position for SAFE)."""
        self._check()
        if level is RiskLevel.SAFE:
            return len(self._index)
        i = ALERT_LEVELS.index(level)
        return sum(bounds[i] for bounds in self.boundaries.values())

    def level_counts(self) -> dict[RiskLevel, int]:
        """How many positions are at exactly each level."""
        self._check()
        return {
            level: sum(stop - start for start, stop in (self._level_range(side, level) for side in self.boundaries))
            for level in RiskLevel
        }

    def level_of(self, position_id: str) -> RiskLevel:
        """One position's level, in O(1) (``KeyError`` if not indexed)."""
        self._check()
        for side, entries in self._index._entries.items():
            entry = entries.get(position_id)
            if entry is not None:
                level = RiskLevel.SAFE
                for candidate, probe in zip(ALERT_LEVELS, self._probes[side]):
                    if entry < probe:
                        level = candidate
                return level
        raise KeyError(position_id)

    def lowest_health_first(self) -> Iterator[str]:
        """Every position id, lowest health factor first across both sides.

        Lazy: taking the first N costs ``O(log n + N)``. Within a side the order
        is the index order; across sides positions are merged by the exact
        ratio ``equity / notional`` at ``P_risk``, which orders like health
        (``health = ratio / mmr``, and mmr is the market's). Ties go to the
        lower position id. Longs whose ``P_risk`` is 0 have no health factor:
        those with negative equity come first (health −∞), the rest last (+∞),
        each group in index order (lowest equity per unit of size first).
        """
        self._check()
        index_now = self._funding_index
        p_long, p_short = self._long_risk_price, self._short_risk_price

        def long_rank(entry: _Entry) -> tuple[int, Fraction, str]:
            excess = entry[1] + p_long - index_now  # equity / size at P_risk
            if p_long == 0:
                return (-1 if excess < 0 else 1), entry[1], entry[2]
            return 0, excess / p_long, entry[2]

        def short_rank(entry: _Entry) -> tuple[int, Fraction, str]:
            return 0, (entry[1] + index_now - p_short) / p_short, entry[2]

        longs = ((long_rank(e), e[2]) for e in self._index._lists[Side.LONG])
        shorts = ((short_rank(e), e[2]) for e in self._index._lists[Side.SHORT])
        for _, position_id in heapq.merge(longs, shorts):
            self._check()
            yield position_id
