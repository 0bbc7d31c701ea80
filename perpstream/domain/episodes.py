"""One liquidation warning per episode: hysteresis for risk levels.

A price oscillating around a threshold would otherwise flip a position
between levels on every tick and warn each time. An *episode* starts when a
position first drops below the warning level and ends only when its health
has recovered to at least ``warning threshold + rearm_margin``. Within an
episode a position is warned when it enters a level more severe than any it
was warned about in that episode, never again for the same or a milder one.
"""

from __future__ import annotations

from decimal import Decimal

from perpstream.domain.risk import RiskLevel

__all__ = ["WarningEpisodes"]

_WARNING = Decimal("1.2")
assert RiskLevel.WARNING.threshold == _WARNING


class WarningEpisodes:
    """The most severe level each position was warned about in its current episode."""

    def __init__(self, rearm_margin: Decimal) -> None:
        if rearm_margin < 0:
            raise ValueError(f"rearm_margin must be >= 0, got {rearm_margin}")
        self.rearm_health = _WARNING + rearm_margin
        self._warned: dict[str, RiskLevel] = {}

    def __contains__(self, position_id: object) -> bool:
        return position_id in self._warned

    def __len__(self) -> int:
        return len(self._warned)

    def tracked(self) -> list[str]:
        """Positions in an episode: they must be looked at until they recover."""
        return list(self._warned)

    def observe(self, position_id: str, level: RiskLevel, health: Decimal | None) -> RiskLevel | None:
        """Record one evaluation; return the level to warn about, or None.

        ``health`` None (no maintenance margin to compare with) never re-arms.
        """
        warned = self._warned.get(position_id, RiskLevel.SAFE)
        if level.severity > warned.severity:
            self._warned[position_id] = level
            return level
        if warned is not RiskLevel.SAFE and level is RiskLevel.SAFE and health is not None \
                and health >= self.rearm_health:
            del self._warned[position_id]
        return None

    def forget(self, position_id: str) -> None:
        """The position is gone (closed, liquidated, reverted away)."""
        self._warned.pop(position_id, None)
