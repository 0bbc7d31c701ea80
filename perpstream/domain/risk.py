"""Risk of one position: PnL, funding, equity, leverage, health, liquidation price.

The formulas are those of the domain design, signed by side ``s`` (+1 long,
−1 short). Display values are evaluated at the mark price ``P``; health is
evaluated at the conservative edge of the oracle's confidence band,
``P_risk = P − σ`` for longs and ``P + σ`` for shorts, with equity and
notional both taken at ``P_risk``. A price cannot be negative, so for a long
whose band reaches below zero (``σ > P``) ``P_risk`` is 0.

Sums, differences and products are computed exactly (no rounding at all, see
:func:`~perpstream.domain.decimals.exact_context`); each ratio (leverage,
health, liquidation price, distance) is one division of exact operands,
rounded once at 50 significant digits. The risk level is decided on the
exact equity and margin, never on a rounded health factor, so a position
sitting exactly on a threshold is classified the same way here as by the
liquidation index.

Health factor ``h = equity / maintenance_margin``; "below level k" is decided
in the division-free form ``equity < k × maintenance_margin``. Where the
maintenance margin at ``P_risk`` is positive the two are the same statement.
Where it is zero (only a long whose confidence band reaches zero, ``σ ≥ P``)
the health factor is reported as ``None`` and the level still follows the
division-free form: such a long with negative equity at ``P_risk = 0`` is
liquidatable, one with non-negative equity there is safe.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum

import attrs

from perpstream.domain.decimals import decimal_context, exact_context
from perpstream.domain.markets import MarketParams
from perpstream.domain.positions import Position, Side

__all__ = [
    "ALERT_LEVELS",
    "PositionRisk",
    "RiskLevel",
    "classify_health",
    "position_level",
    "position_risk",
    "risk_price",
]


class RiskLevel(str, Enum):
    """How close a position is to liquidation; values are the wire ``severity`` strings."""

    SAFE = "safe"
    WARNING = "warning"
    CRITICAL = "critical"
    LIQUIDATABLE = "liquidatable"

    @property
    def threshold(self) -> Decimal | None:
        """The health factor below which a position is at this level (None for SAFE)."""
        return _THRESHOLDS.get(self)

    @property
    def severity(self) -> int:
        """0 (safe) to 3 (liquidatable), for ordering levels."""
        return _SEVERITY[self]


_THRESHOLDS = {
    RiskLevel.WARNING: Decimal("1.2"),
    RiskLevel.CRITICAL: Decimal("1.05"),
    RiskLevel.LIQUIDATABLE: Decimal("1"),
}
_SEVERITY = {level: i for i, level in enumerate(RiskLevel)}

ALERT_LEVELS: tuple[RiskLevel, ...] = (RiskLevel.WARNING, RiskLevel.CRITICAL, RiskLevel.LIQUIDATABLE)
"""The levels with a threshold, least severe (highest threshold) first."""

_MOST_SEVERE_FIRST = tuple(reversed(ALERT_LEVELS))
_ZERO = Decimal(0)


def classify_health(equity: Decimal | int, maintenance_margin: Decimal | int) -> RiskLevel:
    """The most severe level ``k`` with ``equity < k × maintenance_margin``, exactly.

    Pass exact values: comparing rounded ones could misclassify a position
    that sits on a threshold.
    """
    with exact_context():
        for level in _MOST_SEVERE_FIRST:
            if equity < _THRESHOLDS[level] * maintenance_margin:
                return level
    return RiskLevel.SAFE


def risk_price(side: Side, mark_price: Decimal, confidence: Decimal) -> Decimal:
    """``max(P − σ, 0)`` for longs, ``P + σ`` for shorts: the price risk is measured at.

    Exact. ``ValueError`` unless ``P > 0`` and ``σ ≥ 0``.
    """
    if not mark_price > 0:
        raise ValueError(f"mark price must be > 0, got {mark_price}")
    if confidence < 0:
        raise ValueError(f"confidence must be >= 0, got {confidence}")
    with exact_context():
        if side is Side.LONG:
            return max(mark_price - confidence, _ZERO)
        return mark_price + confidence


# The helpers below are exact only inside exact_context().


def _funding_owed(position: Position, funding_index: Decimal) -> Decimal:
    """Positive when the position pays: ``s × size × (I_now − I_entry)``."""
    return position.side.sign * position.size * (funding_index - position.entry_funding_index)


def _equity_at(position: Position, price: Decimal, funding_owed: Decimal) -> Decimal:
    unrealized_pnl = position.side.sign * position.size * (price - position.entry_price)
    return position.collateral + unrealized_pnl - funding_owed


def position_level(
    position: Position,
    mark_price: Decimal,
    confidence: Decimal,
    funding_index: Decimal,
    maintenance_margin_ratio: Decimal,
) -> RiskLevel:
    """The exact risk level alone (what a full scan of positions would compute)."""
    p_risk = risk_price(position.side, mark_price, confidence)
    with exact_context():
        equity = _equity_at(position, p_risk, _funding_owed(position, funding_index))
        margin = position.size * p_risk * maintenance_margin_ratio
    return classify_health(equity, margin)


@attrs.frozen
class PositionRisk:
    """Everything the streams report about one position at one price.

    Values are at the mark price except ``health_factor`` and ``level``
    (at ``risk_price``). ``leverage`` is None when equity ≤ 0;
    ``health_factor`` is None when the maintenance margin at ``risk_price``
    is zero (see the module docstring). Sums and products are exact; the
    four ratios are rounded once at 50 significant digits.
    """

    mark_price: Decimal
    risk_price: Decimal
    unrealized_pnl: Decimal
    funding_owed: Decimal
    equity: Decimal
    notional: Decimal
    leverage: Decimal | None
    maintenance_margin: Decimal
    health_factor: Decimal | None
    level: RiskLevel
    liquidation_price: Decimal
    potential_reward: Decimal
    distance_pct: Decimal


def position_risk(
    position: Position,
    mark_price: Decimal,
    confidence: Decimal,
    funding_index: Decimal,
    params: MarketParams,
) -> PositionRisk:
    """Compute a position's :class:`PositionRisk` (``funding_index``: the index now)."""
    p_risk = risk_price(position.side, mark_price, confidence)
    size, mmr = position.size, params.maintenance_margin_ratio
    with exact_context():
        funding_owed = _funding_owed(position, funding_index)
        unrealized_pnl = position.side.sign * size * (mark_price - position.entry_price)
        equity = position.collateral + unrealized_pnl - funding_owed
        notional = size * mark_price
        equity_at_risk = _equity_at(position, p_risk, funding_owed)
        margin_at_risk = size * p_risk * mmr
        # Liquidation price = where equity = maintenance margin, with f = funding_owed:
        # long (E·size − C + f) / (size(1 − mmr)), short (E·size + C − f) / (size(1 + mmr)).
        if position.side is Side.LONG:
            liquidation_value = position.entry_price * size - position.collateral + funding_owed
            liquidation_size = size * (1 - mmr)
        else:
            liquidation_value = position.entry_price * size + position.collateral - funding_owed
            liquidation_size = size * (1 + mmr)
        # distance_pct = |P − value/size'| / P × 100 = |P·size' − value| × 100 / (P·size')
        distance_numerator = abs(mark_price * liquidation_size - liquidation_value) * 100
        distance_denominator = mark_price * liquidation_size
        fee = min(max(notional * params.liquidation_fee_ratio, params.min_keeper_fee), params.max_keeper_fee)
        potential_reward = min(fee, max(equity, _ZERO))
        maintenance_margin = notional * mmr
    with decimal_context():
        return PositionRisk(
            mark_price=mark_price,
            risk_price=p_risk,
            unrealized_pnl=unrealized_pnl,
            funding_owed=funding_owed,
            equity=equity,
            notional=notional,
            leverage=notional / equity if equity > 0 else None,
            maintenance_margin=maintenance_margin,
            health_factor=equity_at_risk / margin_at_risk if margin_at_risk > 0 else None,
            level=classify_health(equity_at_risk, margin_at_risk),
            liquidation_price=liquidation_value / liquidation_size,
            potential_reward=potential_reward,
            distance_pct=distance_numerator / distance_denominator,
        )
