"""The liquidation index against an exact position-by-position evaluation."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from perpstream.domain import (
    ALERT_LEVELS,
    LiquidationIndex,
    Position,
    RiskLevel,
    Side,
    StaleQueryError,
    decimal_context,
    exact_context,
    position_risk,
)

from .factories import market, position

D = Decimal


# ---------------------------------------------------------------- the reference


def exact_level(p: Position, mark: Decimal, confidence: Decimal, index_now: Decimal, mmr: Decimal) -> RiskLevel:
    """Health below k ⟺ equity < k × margin, both at P_risk, in exact rationals."""
    s = p.side.sign
    price = Fraction(mark) - s * Fraction(confidence)
    price = max(price, Fraction(0))
    size = Fraction(p.size)
    equity = (
        Fraction(p.collateral)
        + s * size * (price - Fraction(p.entry_price))
        - s * size * (Fraction(index_now) - Fraction(p.entry_funding_index))
    )
    margin = size * price * Fraction(mmr)
    for level in reversed(ALERT_LEVELS):
        if equity < Fraction(level.threshold) * margin:  # type: ignore[arg-type]
            return level
    return RiskLevel.SAFE


def exact_rank(p: Position, mark: Decimal, confidence: Decimal, index_now: Decimal) -> tuple[int, Fraction]:
    """Orders like health: equity / notional at P_risk.

    A long at P_risk 0 has health −∞ or +∞; among those, lower equity per unit first.
    """
    s = p.side.sign
    price = max(Fraction(mark) - s * Fraction(confidence), Fraction(0))
    size = Fraction(p.size)
    equity = (
        Fraction(p.collateral)
        + s * size * (price - Fraction(p.entry_price))
        - s * size * (Fraction(index_now) - Fraction(p.entry_funding_index))
    )
    if price == 0:
        return (-1 if equity < 0 else 1), equity / size
    return 0, equity / (size * price)


def check_query(index: LiquidationIndex, positions: dict[str, Position], mmr: Decimal,
                mark: Decimal, confidence: Decimal, index_now: Decimal) -> None:
    q = index.query(mark, confidence, index_now)
    expected = {pid: exact_level(p, mark, confidence, index_now, mmr) for pid, p in positions.items()}
    for level in ALERT_LEVELS:
        below = {pid for pid, got in expected.items() if got.severity >= level.severity}
        crossed = q.crossed(level)
        assert set(crossed) == below, level
        assert len(crossed) == q.count(level) == len(below)
        for pid in positions:
            assert (pid in crossed) == (pid in below)
    for level in RiskLevel:
        assert set(q.at(level)) == {pid for pid, got in expected.items() if got is level}
    assert q.level_counts() == {level: sum(got is level for got in expected.values()) for level in RiskLevel}
    assert q.count(RiskLevel.SAFE) == len(positions)
    params = market(mmr=str(mmr))
    for pid, p in positions.items():
        assert q.level_of(pid) is expected[pid]
        assert position_risk(p, mark, confidence, index_now, params).level is expected[pid]
    ranked = list(q.lowest_health_first())
    assert sorted(ranked) == sorted(positions)
    ranks = [(*exact_rank(positions[pid], mark, confidence, index_now), pid) for pid in ranked]
    assert ranks == sorted(ranks)
    for side in Side:  # each side's run is riskiest first
        side_ranks = [exact_rank(positions[pid], mark, confidence, index_now) for pid in q.crossed(ALERT_LEVELS[0]).side(side)]
        assert side_ranks == sorted(side_ranks)


# ---------------------------------------------------------------- strategies

simple = st.sampled_from
sizes = st.one_of(simple(["1", "2", "3", "0.5", "0.25", "0.3", "7", "10"]).map(D),
                  st.decimals(min_value=D("0.000001"), max_value=D("1000"), places=6))
collaterals = st.one_of(simple(["0", "1", "2", "5", "5.25", "6", "10", "50"]).map(D),
                        st.decimals(min_value=0, max_value=D("2000"), places=6))
entry_prices = st.one_of(simple(["90", "95", "100", "105", "110"]).map(D),
                         st.decimals(min_value=D("50"), max_value=D("150"), places=2))
funding_indices = st.one_of(simple(["0", "0.5", "-1", "1", "2.25"]).map(D),
                            st.decimals(min_value=D("-5"), max_value=D("5"), places=18))
marks = st.one_of(simple(["1", "50", "90", "95", "100", "101", "105", "110", "200"]).map(D),
                  st.decimals(min_value=D("0.5"), max_value=D("300"), places=4))
confidences = st.one_of(simple(["0", "0.5", "1", "2"]).map(D),
                        st.decimals(min_value=0, max_value=D("10"), places=4))


def terminating(value: Fraction) -> Decimal | None:
    """The exact decimal of a rational, or None if it does not terminate."""
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return None
    scale = max(twos, fives)
    with exact_context():
        return Decimal(value.numerator * 10**scale // value.denominator).scaleb(-scale)


class IndexVersusBruteForce(RuleBasedStateMachine):
    """Random opens, modifications and closes; every query is checked in full."""

    @initialize(mmr=simple(["0.05", "0.2", "0.25", "0.005", "0.1", "0.8"]).map(D))
    def setup(self, mmr: Decimal) -> None:
        self.mmr = mmr
        self.index = LiquidationIndex(mmr)
        self.positions: dict[str, Position] = {}
        self.next_id = 1

    @rule(side=st.sampled_from(Side), size=sizes, collateral=collaterals, entry=entry_prices, entry_index=funding_indices)
    def open(self, side: Side, size: Decimal, collateral: Decimal, entry: Decimal, entry_index: Decimal) -> None:
        p = position(self.next_id, side, size=size, collateral=collateral, entry_price=entry, entry_funding_index=entry_index)
        self.next_id += 1
        self.index.insert(p)
        self.positions[p.position_id] = p

    @rule(specs=st.lists(st.tuples(st.sampled_from(Side), sizes, collaterals, entry_prices, funding_indices),
                         min_size=2, max_size=8))
    def open_several(self, specs: list[tuple[Side, Decimal, Decimal, Decimal, Decimal]]) -> None:
        for spec in specs:
            self.open(*spec)

    @precondition(lambda self: self.positions)
    @rule(data=st.data(), size=sizes, collateral=collaterals, entry=entry_prices, entry_index=funding_indices)
    def modify(self, data: st.DataObject, size: Decimal, collateral: Decimal, entry: Decimal, entry_index: Decimal) -> None:
        pid = data.draw(st.sampled_from(sorted(self.positions)))
        p = self.positions[pid].modified(size=size, collateral=collateral, entry_price=entry, entry_funding_index=entry_index)
        self.index.update(p)
        self.positions[pid] = p

    @precondition(lambda self: self.positions)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.positions)))
        self.index.remove(pid)
        del self.positions[pid]

    @rule(mark=marks, confidence=confidences, index_now=funding_indices)
    def query(self, mark: Decimal, confidence: Decimal, index_now: Decimal) -> None:
        check_query(self.index, self.positions, self.mmr, mark, confidence, index_now)

    def _terminating_per_unit(self) -> list[str]:
        """Positions whose collateral / size is a finite decimal (an exact boundary exists)."""
        return [pid for pid, p in sorted(self.positions.items()) if terminating(Fraction(p.collateral) / Fraction(p.size)) is not None]

    @precondition(lambda self: self._terminating_per_unit())
    @rule(data=st.data(), health=simple(["1.2", "1.05", "1"] * 2 + ["1.1", "1.01", "0.95", "1.3"]).map(Fraction),
          price=marks, confidence=confidences)
    def query_at_a_chosen_health(self, data: st.DataObject, health: Fraction, price: Decimal, confidence: Decimal) -> None:
        """Move the funding index so that one position's health is exactly ``health`` at P_risk ``price``.

        With ``health`` a threshold this puts a position exactly on a boundary.
        """
        p = self.positions[data.draw(st.sampled_from(self._terminating_per_unit()))]
        if p.side is Side.SHORT and confidence >= price:
            confidence = D(0)
        with exact_context():
            mark = price + confidence if p.side is Side.LONG else price - confidence
        p_risk, mmr = Fraction(price), Fraction(self.mmr)
        per_unit = Fraction(p.collateral) / Fraction(p.size)
        entry, entry_index = Fraction(p.entry_price), Fraction(p.entry_funding_index)
        if p.side is Side.LONG:  # health h ⟺ C/size + I_e − E = I − p(1 − h·mmr)
            index_now = terminating(per_unit + entry_index - entry + p_risk * (1 - health * mmr))
        else:  # health h ⟺ E + C/size − I_e = p(1 + h·mmr) − I
            index_now = terminating(p_risk * (1 + health * mmr) - (entry + per_unit - entry_index))
        assert index_now is not None
        below = [level for level in ALERT_LEVELS if health < Fraction(level.threshold)]  # type: ignore[arg-type]
        assert exact_level(p, mark, confidence, index_now, self.mmr) is (below[-1] if below else RiskLevel.SAFE)
        check_query(self.index, self.positions, self.mmr, mark, confidence, index_now)

    @invariant()
    def sizes_agree(self) -> None:
        assert len(self.index) == len(self.positions)


TestIndexVersusBruteForce = IndexVersusBruteForce.TestCase
TestIndexVersusBruteForce.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)


# ---------------------------------------------------------------- examples


MMR = D("0.05")


def test_exact_where_a_fifty_digit_key_would_be_wrong() -> None:
    # long, size 3, collateral 2, entry 100: key = C/size + I_e − E = 2/3 − 100 exactly.
    p = position(1, Side.LONG, size="3", collateral="2", entry_price="100")
    with decimal_context():
        rounded_key = Decimal(2) / Decimal(3) - 100  # −99.33…33 (50 digits): above the true key
        # P_risk 100, mmr 0.05, k = 1: the bound is I − 100 × 0.95; choose I so bound = rounded key.
        index_now = rounded_key + 95
    index = LiquidationIndex(MMR)
    index.insert(p)
    q = index.query(D("100"), D("0"), index_now)
    # A Decimal key would compare equal to the bound (health exactly 1: critical, not liquidatable).
    # Exactly, 2/3 − 100 < bound: health is just below 1.
    assert exact_level(p, D("100"), D("0"), index_now, MMR) is RiskLevel.LIQUIDATABLE
    assert q.level_of(p.position_id) is RiskLevel.LIQUIDATABLE
    assert list(q.crossed(RiskLevel.LIQUIDATABLE)) == [p.position_id]


def test_funding_drift_moves_the_bound_not_the_entries() -> None:
    index = LiquidationIndex(MMR)
    long = position(1, Side.LONG, collateral="6", entry_price="100")
    short = position(2, Side.SHORT, collateral="6", entry_price="100")
    index.insert(long)
    index.insert(short)
    # P_risk 100 for both (σ = 0), margin 5, equity 6 ∓ funding owed.
    q = index.query(D("100"), D("0"), D("0"))
    assert q.level_counts()[RiskLevel.SAFE] == 2  # health exactly 1.2
    q = index.query(D("100"), D("0"), D("0.01"))  # longs pay 0.01: 5.99; shorts receive: 6.01
    assert q.level_of(long.position_id) is RiskLevel.WARNING
    assert q.level_of(short.position_id) is RiskLevel.SAFE
    q = index.query(D("100"), D("0"), D("-1.5"))  # shorts pay 1.5: 4.5 → health 0.9
    assert q.level_of(short.position_id) is RiskLevel.LIQUIDATABLE
    assert q.level_of(long.position_id) is RiskLevel.SAFE


def test_views_are_riskiest_first_per_side_and_levels_nest() -> None:
    index = LiquidationIndex(MMR)
    # longs, entry 100, P_risk 100 → health = collateral / 5
    for n, collateral in enumerate(["6.5", "5.1", "4", "5.5", "5.3"], start=1):
        index.insert(position(n, Side.LONG, collateral=collateral))
    q = index.query(D("100"), D("0"), D("0"))
    ids = {collateral: position(n).position_id for n, collateral in enumerate(["6.5", "5.1", "4", "5.5", "5.3"], start=1)}
    assert list(q.crossed(RiskLevel.WARNING)) == [ids["4"], ids["5.1"], ids["5.3"], ids["5.5"]]
    assert list(q.crossed(RiskLevel.CRITICAL)) == [ids["4"], ids["5.1"]]
    assert list(q.crossed(RiskLevel.LIQUIDATABLE)) == [ids["4"]]
    assert list(q.at(RiskLevel.WARNING)) == [ids["5.3"], ids["5.5"]]
    assert list(q.at(RiskLevel.SAFE)) == [ids["6.5"]]
    assert q.boundaries[Side.LONG] == (4, 2, 1) and q.boundaries[Side.SHORT] == (0, 0, 0)
    assert list(q.crossed(RiskLevel.WARNING).side(Side.SHORT)) == []
    assert ids["4"] in q.crossed(RiskLevel.LIQUIDATABLE) and ids["5.1"] not in q.crossed(RiskLevel.LIQUIDATABLE)
    assert position(99).position_id not in q.crossed(RiskLevel.WARNING)
    assert list(q.lowest_health_first())[:2] == [ids["4"], ids["5.1"]]


def test_lowest_health_first_merges_sides() -> None:
    index = LiquidationIndex(MMR)
    # P_risk 100 both sides (σ 0), entry 100, margin 5: health = collateral / 5
    for n, (side, collateral) in enumerate([(Side.LONG, "7"), (Side.SHORT, "5.5"), (Side.LONG, "5"), (Side.SHORT, "9")]):
        index.insert(position(n, side, collateral=collateral))
    q = index.query(D("100"), D("0"), D("0"))
    assert list(q.lowest_health_first()) == [position(n).position_id for n in (2, 1, 0, 3)]


def test_a_long_at_zero_risk_price_ranks_by_sign_of_equity() -> None:
    index = LiquidationIndex(MMR)
    underwater = position(1, Side.LONG, collateral="50", entry_price="100")  # equity at 0: −50
    covered = position(2, Side.LONG, collateral="150", entry_price="100")  # equity at 0: +50
    short = position(3, Side.SHORT, collateral="1", entry_price="1")
    for p in (covered, short, underwater):
        index.insert(p)
    q = index.query(D("1"), D("2"), D("0"))  # long P_risk = max(1 − 2, 0) = 0
    assert list(q.lowest_health_first()) == [underwater.position_id, short.position_id, covered.position_id]
    assert q.level_of(underwater.position_id) is RiskLevel.LIQUIDATABLE
    assert q.level_of(covered.position_id) is RiskLevel.SAFE


def test_a_query_refuses_to_answer_after_the_index_changed() -> None:
    index = LiquidationIndex(MMR)
    index.insert(position(1))
    q = index.query(D("100"), D("0"), D("0"))
    crossed = q.crossed(RiskLevel.WARNING)
    ranking = q.lowest_health_first()
    index.insert(position(2))
    for use in (lambda: q.level_of(position(1).position_id), lambda: q.count(RiskLevel.WARNING),
                lambda: list(crossed), lambda: len(crossed), q.level_counts, lambda: next(ranking)):
        with pytest.raises(StaleQueryError):
            use()


def test_mutations_check_presence() -> None:
    index = LiquidationIndex(MMR)
    index.insert(position(1))
    with pytest.raises(ValueError):
        index.insert(position(1, Side.SHORT))
    with pytest.raises(KeyError):
        index.remove(position(2).position_id)
    with pytest.raises(KeyError):
        index.update(position(2))
    index.update(position(1, collateral="1"))
    assert index.query(D("100"), D("0"), D("0")).level_of(position(1).position_id) is RiskLevel.LIQUIDATABLE
    index.remove(position(1).position_id)
    assert len(index) == 0 and position(1).position_id not in index
    with pytest.raises(KeyError):
        index.query(D("100"), D("0"), D("0")).level_of(position(1).position_id)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        LiquidationIndex(D("0.9"))
    with pytest.raises(ValueError):
        LiquidationIndex(D("0"))
    index = LiquidationIndex(MMR)
    with pytest.raises(ValueError):
        index.query(D("0"), D("0"), D("0"))
    with pytest.raises(ValueError):
        index.query(D("100"), D("0"), D("0")).crossed(RiskLevel.SAFE)
