"""Risk on the pure core: the contract's verdict, one warning per episode, the liquidation events."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

from perpstream.domain import Position, RiskLevel, Side, position_risk
from perpstream.domain.margin import WAD, contract_margin
from perpstream.protocol import LiquidationWarning
from tests.services.builders import (
    ALICE,
    BOB,
    BTC,
    T0_MS,
    closed,
    core,
    delivery,
    liquidated,
    meta,
    opened,
    params,
    pid,
    price,
)


def _with_long(collateral: str = "1000", size: str = "1", entry: str = "65000", **settings: object):  # type: ignore[no-untyped-def]
    market = core(**settings)
    market.on_delivery(delivery(opened(1, meta(10), size=size, collateral=collateral, entry=entry), "pending", 1),
                       T0_MS)
    return market


class _Ticks:
    """Prices a second and a slot apart, so each one is newer than the last."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, value: str, conf: str = "0"):  # type: ignore[no-untyped-def]
        self.n += 1
        at_ms = T0_MS + self.n * 400
        return price(value, at_ms=at_ms, slot=self.n, conf=conf), at_ms


def test_liquidatable_exactly_when_the_contract_would_accept_it_at_the_boundary() -> None:
    # equity = 1320 + (P − 65000), maintenance = 0.005 P: equal at P = 64,000.
    market = _with_long(collateral="1320")
    tick = _Ticks()
    effects = market.on_price(*tick("64000"))
    [view] = market.positions_of(ALICE, tick.n * 400 + T0_MS)
    assert view.liquidatable is False and view.health_factor == Decimal("1.000000")
    assert effects.liquidation_events == []
    effects = market.on_price(*tick("63999.99999999"))
    [view] = market.positions_of(ALICE, tick.n * 400 + T0_MS)
    assert view.liquidatable is True and view.health_factor < 1
    assert view.mark_price < view.liquidation_price
    [event] = effects.liquidation_events
    assert event.kind == "liquidatable" and event.shortfall == Decimal("0.00000000995")


def test_the_contracts_rounding_not_exact_arithmetic_decides() -> None:
    # A size of 1/3 BTC in wads: the contract truncates the PnL toward zero and floors the
    # margin, so a long whose exact equity is a fraction of a wei below its exact maintenance
    # margin is NOT liquidatable on chain.
    size_wad, entry_wad, price_wad, mmr_wad = WAD // 3, 65_000 * WAD, 63_999_99999999 * 10**10, 5 * WAD // 1000
    exact_pnl = Fraction(size_wad * (price_wad - entry_wad), WAD)
    exact_maintenance = Fraction(size_wad * price_wad, WAD) * Fraction(5, 1000)
    collateral_wad = math.ceil(exact_maintenance - exact_pnl) - 1
    collateral, size = Decimal(collateral_wad) / WAD, Decimal(size_wad) / WAD
    exact = position_risk(Position(position_id=pid(1), account=ALICE, market_id=BTC, side=Side.LONG, size=size,
                                   collateral=collateral, entry_price=Decimal(65000),
                                   entry_funding_index=Decimal(0)),
                          Decimal("63999.99999999"), Decimal(0), Decimal(0), params())
    assert exact.level is RiskLevel.LIQUIDATABLE  # what exact decimals would have said
    margin = contract_margin(is_long=True, size=size_wad, collateral=collateral_wad, entry_price=entry_wad,
                             entry_funding_index=0, funding_index=0, price=price_wad,
                             maintenance_margin_ratio=mmr_wad)
    assert not margin.liquidatable
    market = _with_long(collateral=str(collateral), size=str(size))
    tick = _Ticks()
    effects = market.on_price(*tick("63999.99999999"))
    assert effects.liquidation_events == []
    assert [w.severity for _, w in effects.user_events] == ["critical"]
    assert market.candidates(5, T0_MS + 400).total_liquidatable == 0


def test_the_confidence_band_is_an_early_signal_not_the_verdict() -> None:
    market = _with_long()
    tick = _Ticks()
    effects = market.on_price(*tick("64330", conf="20"))  # P − σ = 64,310 would be liquidatable
    [(_, warning)] = effects.user_events
    assert isinstance(warning, LiquidationWarning)
    assert warning.severity == "critical" and warning.liquidatable is False
    assert warning.health_factor >= 1 and warning.health_factor_conservative < 1
    assert warning.mark_price == Decimal(64330) and warning.mark_price > warning.liquidation_price
    assert effects.liquidation_events == []
    [candidate] = market.candidates(5, T0_MS + 400).candidates
    assert candidate.liquidatable is False and candidate.health_factor_conservative < 1


def test_funding_is_the_chains_last_posted_index_not_an_extrapolation() -> None:
    from perpstream.chain.events import FundingUpdated

    market = _with_long()
    tick = _Ticks()
    market.on_price(*tick("64330"))
    # A chain funding update at a large rate: the model would extrapolate it, the contract does not.
    post = FundingUpdated(meta(11), BTC, Decimal("0.01"), Decimal("0"), T0_MS // 1000)
    market.on_delivery(delivery(post, "pending", 2), T0_MS)
    hours_later = T0_MS + 10 * 3_600_000
    assert market.funding_index(hours_later) > 1000  # accrued: PnL and equity show it
    effects = market.on_price(price("64330", at_ms=hours_later, slot=99), hours_later)
    assert effects.liquidation_events == []
    [view] = market.positions_of(ALICE, hours_later)
    assert view.liquidatable is False and view.equity < 0


# Long 1 BTC, 1,000 USDC collateral, entry 65,000, mmr 0.005, at the plain price P:
# health < 1.2 below 64,386.32, < 1.05 below 64,338.77, < 1 below 64,321.61; the re-arm
# health 1.2 + 0.05 is reached at 64,402.52.
OSCILLATING_PATH = [
    ("64390", None, None),                       # safe
    ("64380", "warning", None),                  # enters warning
    ("64390", None, None), ("64380", None, None),  # flips around 1.2: no repeat
    ("64390", None, None), ("64380", None, None),
    ("64330", "critical", None),                 # worsens
    ("64340", None, None), ("64330", None, None),  # flips around 1.05: no repeat
    ("64320", "liquidatable", "liquidatable"),   # worsens; the contract would accept it
    ("64325", None, "recovered"),                # no longer liquidatable: a bot must know
    ("64320", None, "liquidatable"),             # again, without a new warning
    ("64400", None, "recovered"),                # above 1.2 but below the re-arm health
    ("64380", None, None),                       # same episode: no warning
    ("64410", None, None),                       # re-armed
    ("64380", "warning", None),                  # a new episode
]


def test_an_oscillating_price_warns_once_per_level_per_episode() -> None:
    market = _with_long(warning_rearm_margin=Decimal("0.05"))
    tick = _Ticks()
    for value, warned, event in OSCILLATING_PATH:
        effects = market.on_price(*tick(value))
        warnings = [m.severity for _, m in effects.user_events]
        events = [e.kind for e in effects.liquidation_events]
        assert warnings == ([warned] if warned else []), value
        assert events == ([event] if event else []), value


def test_liquidation_events_carry_what_a_bot_acts_on_with_ids_to_dedupe_on() -> None:
    market = _with_long()
    tick = _Ticks()
    first = market.on_price(*tick("64300")).liquidation_events
    market.on_price(*tick("64330"))
    second = market.on_price(*tick("64300")).liquidation_events
    [a], [b] = first, second
    assert a.id != b.id and a.kind == b.kind == "liquidatable"
    assert (a.user_address, a.market_id, a.position_id, a.side, a.size) == (ALICE, BTC, pid(1), "long", Decimal(1))
    assert a.equity == Decimal(300) and a.maintenance_margin == Decimal("321.5")
    assert a.shortfall == Decimal("21.5") and a.health_factor == Decimal("0.933125")
    assert a.mark_price == Decimal(64300) and a.potential_reward == Decimal("300")
    assert a.update_data == ("0x0102",)
    effects = market.on_delivery(delivery(liquidated(1, meta(11)), "pending", 2), T0_MS)
    [gone] = effects.liquidation_events
    assert gone.kind == "liquidated" and gone.liquidator == BOB and gone.event.tx_hash == meta(11).tx_hash
    assert gone.id == f"liquidated:{pid(1)}:{meta(11).tx_hash}:0"
    assert market.liquidatable == set()


def test_closing_a_liquidatable_position_is_announced() -> None:
    market = _with_long()
    tick = _Ticks()
    market.on_price(*tick("64300"))
    [event] = market.on_delivery(delivery(closed(1, meta(11)), "pending", 2), T0_MS).liquidation_events
    assert event.kind == "closed" and event.side == "long" and event.size == Decimal(1)
    # A healthy position's close is no liquidation event.
    market.on_delivery(delivery(opened(2, meta(12)), "pending", 3), T0_MS)
    market.on_price(*tick("65000"))
    assert market.on_delivery(delivery(closed(2, meta(13)), "pending", 4), T0_MS).liquidation_events == []


def test_no_risk_signal_on_a_stale_price() -> None:
    market = _with_long(stale_after_ms=10_000)
    old = price("64300", at_ms=T0_MS - 60_000, slot=1)
    effects = market.on_price(old, T0_MS)
    assert effects.user_events == [] and effects.liquidation_events == []
    assert market.candidates(5, T0_MS).total_liquidatable == 0
