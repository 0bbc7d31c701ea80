"""Hand-computed risk cases. Market: mmr 0.05, liquidation fee 1%, keeper fee 5..100."""

from decimal import Decimal

import pytest

from perpstream.domain import (
    ALERT_LEVELS,
    RiskLevel,
    Side,
    classify_health,
    decimal_context,
    position_level,
    position_risk,
    risk_price,
)

from .factories import market, position

D = Decimal
MARKET = market(mmr="0.05")


def q(numerator: int, denominator: int) -> Decimal:
    """The expected display value of a non-terminating ratio (rounded once, 50 digits)."""
    with decimal_context():
        return Decimal(numerator) / Decimal(denominator)


def test_long_with_funding_owed_and_confidence_band() -> None:
    p = position(side=Side.LONG, size="2", collateral="49", entry_price="100", entry_funding_index="1")
    r = position_risk(p, mark_price=D("110"), confidence=D("2"), funding_index=D("1.5"), params=MARKET)
    assert r.unrealized_pnl == D("20")  # +1 × 2 × (110 − 100)
    assert r.funding_owed == D("1")  # +1 × 2 × (1.5 − 1): the long pays
    assert r.equity == D("68")  # 49 + 20 − 1
    assert r.notional == D("220")  # 2 × 110
    assert r.leverage == q(55, 17)  # 220 / 68
    assert r.maintenance_margin == D("11")  # 220 × 0.05
    # At P_risk = 110 − 2 = 108: equity 49 + 2 × 8 − 1 = 64, margin 2 × 108 × 0.05 = 10.8
    assert r.risk_price == D("108")
    assert r.health_factor == q(160, 27)  # 64 / 10.8
    assert r.level is RiskLevel.SAFE
    # (100 × 2 − 49 + 1) / (2 × 0.95) = 152 / 1.9
    assert r.liquidation_price == D("80")
    assert r.potential_reward == D("5")  # clamp(220 × 0.01 = 2.2, 5, 100), ≤ equity 68
    assert r.distance_pct == q(300, 11)  # |110 − 80| / 110 × 100
    assert r.mark_price == D("110")


def test_short_with_funding_received_and_confidence_band() -> None:
    p = position(side=Side.SHORT, size="3", collateral="25.2", entry_price="50", entry_funding_index="2")
    r = position_risk(p, mark_price=D("45"), confidence=D("0.5"), funding_index=D("2.4"), params=MARKET)
    assert r.unrealized_pnl == D("15")  # −1 × 3 × (45 − 50)
    assert r.funding_owed == D("-1.2")  # −1 × 3 × (2.4 − 2): the short receives
    assert r.equity == D("41.4")  # 25.2 + 15 + 1.2
    assert r.notional == D("135")  # 3 × 45
    assert r.leverage == q(75, 23)  # 135 / 41.4
    assert r.maintenance_margin == D("6.75")  # 135 × 0.05
    # At P_risk = 45 + 0.5 = 45.5: equity 25.2 − 3 × (45.5 − 50) + 1.2 = 39.9, margin 3 × 45.5 × 0.05 = 6.825
    assert r.risk_price == D("45.5")
    assert r.health_factor == q(76, 13)  # 39.9 / 6.825
    assert r.level is RiskLevel.SAFE
    # (50 × 3 + 25.2 − (−1.2)) / (3 × 1.05) = 176.4 / 3.15
    assert r.liquidation_price == D("56")
    assert r.potential_reward == D("5")  # clamp(135 × 0.01 = 1.35, 5, 100)
    assert r.distance_pct == q(220, 9)  # |45 − 56| / 45 × 100


# size 3, entry 40, funding index 0.3 → 0.45:
# long  f = +0.45: (40 × 3 − 12.15 + 0.45) / (3 × 0.95) = 108.3 / 2.85 = 38
# short f = −0.45: (40 × 3 + 11.85 + 0.45) / (3 × 1.05) = 132.3 / 3.15 = 42
@pytest.mark.parametrize(("side", "collateral", "liquidation_price"), [(Side.LONG, "12.15", "38"), (Side.SHORT, "11.85", "42")])
def test_liquidation_price_is_where_equity_equals_maintenance_margin(
    side: Side, collateral: str, liquidation_price: str
) -> None:
    p = position(side=side, size="3", collateral=collateral, entry_price="40", entry_funding_index="0.3")
    assert position_risk(p, D("41"), D("0"), D("0.45"), MARKET).liquidation_price == D(liquidation_price)
    at_liquidation = position_risk(p, D(liquidation_price), D("0"), D("0.45"), MARKET)
    assert at_liquidation.equity == at_liquidation.maintenance_margin
    assert at_liquidation.health_factor == 1
    assert at_liquidation.level is RiskLevel.CRITICAL  # health 1 is not below 1
    assert at_liquidation.distance_pct == 0


# P = 101 / 99 and σ = 1 put P_risk at 100 for either side; size 1, entry 100, no
# funding: equity at P_risk = collateral, margin = 1 × 100 × 0.05 = 5, health = C / 5.
@pytest.mark.parametrize(
    ("collateral", "health", "level"),
    [
        ("6", "1.2", RiskLevel.SAFE),  # exactly 1.2 is not below 1.2
        ("5.99", "1.198", RiskLevel.WARNING),
        ("5.25", "1.05", RiskLevel.WARNING),  # exactly 1.05 is not below 1.05
        ("5.2", "1.04", RiskLevel.CRITICAL),
        ("5", "1", RiskLevel.CRITICAL),  # exactly 1 is not liquidatable
        ("4.99", "0.998", RiskLevel.LIQUIDATABLE),
    ],
)
@pytest.mark.parametrize(("side", "mark"), [(Side.LONG, "101"), (Side.SHORT, "99")])
def test_levels_at_and_around_each_threshold(side: Side, mark: str, collateral: str, health: str, level: RiskLevel) -> None:
    p = position(side=side, collateral=collateral, entry_price="100")
    r = position_risk(p, D(mark), D("1"), D("0"), MARKET)
    assert r.risk_price == D("100")
    assert r.health_factor == D(health)
    assert r.level is level
    assert position_level(p, D(mark), D("1"), D("0"), MARKET.maintenance_margin_ratio) is level


def test_confidence_band_is_what_health_is_measured_at() -> None:
    p = position(side=Side.LONG, collateral="6", entry_price="100")
    # σ = 0: P_risk 101, equity 6 + 1 = 7, margin 5.05
    assert position_risk(p, D("101"), D("0"), D("0"), MARKET).level is RiskLevel.SAFE
    # σ = 1.5: P_risk 99.5, equity 5.5, margin 4.975, health 1.105...
    r = position_risk(p, D("101"), D("1.5"), D("0"), MARKET)
    assert r.health_factor == q(5500, 4975)
    assert r.level is RiskLevel.WARNING
    assert r.equity == D("7")  # display values stay at the mark price


def test_funding_accrued_since_entry_can_push_a_long_into_warning() -> None:
    p = position(side=Side.LONG, collateral="6", entry_price="100", entry_funding_index="0")
    # P_risk = 100; funding owed 1 × (0.01 − 0) = 0.01: equity 5.99, health 1.198
    r = position_risk(p, D("100"), D("0"), D("0.01"), MARKET)
    assert (r.funding_owed, r.equity, r.level) == (D("0.01"), D("5.99"), RiskLevel.WARNING)
    # the same index move pays a short: equity 6.01 + (100 − 100) → health 1.202
    s = position(side=Side.SHORT, collateral="6", entry_price="100", entry_funding_index="0")
    assert position_risk(s, D("100"), D("0"), D("0.01"), MARKET).level is RiskLevel.SAFE


def test_level_is_decided_exactly_even_when_display_rounds_onto_the_threshold() -> None:
    # equity = 6 − 10⁻⁶⁰ at P_risk 100, margin 5: health 1.2 − 2·10⁻⁶¹, shown as 1.2 at 50 digits.
    p = position(side=Side.LONG, collateral="5." + "9" * 60, entry_price="100")
    r = position_risk(p, D("101"), D("1"), D("0"), MARKET)
    assert r.health_factor == D("1.2")
    assert r.level is RiskLevel.WARNING


@pytest.mark.parametrize(
    ("size", "collateral", "mark", "reward"),
    [
        ("10", "50", "100", "10"),  # 1000 × 0.01 = 10, inside [5, 100]
        ("200", "5000", "100", "100"),  # 20000 × 0.01 = 200 → capped at 100
        ("1", "3", "100", "3"),  # clamp gives 5, but equity is only 3
        ("1", "3", "90", "0"),  # equity 3 − 10 < 0 → nothing to pay from
    ],
)
def test_potential_reward(size: str, collateral: str, mark: str, reward: str) -> None:
    p = position(side=Side.LONG, size=size, collateral=collateral, entry_price="100")
    assert position_risk(p, D(mark), D("0"), D("0"), MARKET).potential_reward == D(reward)


def test_leverage_is_none_without_positive_equity() -> None:
    p = position(side=Side.LONG, collateral="5", entry_price="100")
    r = position_risk(p, D("95"), D("0"), D("0"), MARKET)  # equity 5 − 5 = 0
    assert r.equity == 0 and r.leverage is None
    assert r.health_factor == 0 and r.level is RiskLevel.LIQUIDATABLE


@pytest.mark.parametrize(("collateral", "level"), [("150", RiskLevel.SAFE), ("50", RiskLevel.LIQUIDATABLE)])
@pytest.mark.parametrize("confidence", ["10", "12"])
def test_long_whose_band_reaches_zero_has_no_health_but_a_level(collateral: str, level: RiskLevel, confidence: str) -> None:
    # P_risk = max(10 − σ, 0) = 0: margin 0; equity at 0 = C − 100
    p = position(side=Side.LONG, collateral=collateral, entry_price="100")
    r = position_risk(p, D("10"), D(confidence), D("0"), MARKET)
    assert r.risk_price == 0 and r.health_factor is None
    assert r.level is level


@pytest.mark.parametrize(("mark", "confidence"), [("0", "0"), ("-1", "0"), ("100", "-1")])
def test_prices_must_be_usable(mark: str, confidence: str) -> None:
    with pytest.raises(ValueError):
        position_risk(position(), D(mark), D(confidence), D("0"), MARKET)
    with pytest.raises(ValueError):
        risk_price(Side.SHORT, D(mark), D(confidence))


def test_classify_health_and_level_metadata() -> None:
    assert classify_health(D("6"), D("5")) is RiskLevel.SAFE
    assert classify_health(D("5.99"), 5) is RiskLevel.WARNING
    assert classify_health(-1, 0) is RiskLevel.LIQUIDATABLE
    assert classify_health(0, 0) is RiskLevel.SAFE
    assert [level.threshold for level in ALERT_LEVELS] == [D("1.2"), D("1.05"), D("1")]
    assert RiskLevel.SAFE.threshold is None
    assert sorted(RiskLevel, key=lambda level: level.severity) == [
        RiskLevel.SAFE, RiskLevel.WARNING, RiskLevel.CRITICAL, RiskLevel.LIQUIDATABLE
    ]
    assert RiskLevel.LIQUIDATABLE.value == "liquidatable"
