"""The service's margin arithmetic is the contract's, wei for wei, boundary included.

On random positions, oracle prices (Pyth mantissa and exponent), funding
indexes and risk parameters, :func:`contract_margin` and
:func:`keeper_reward` equal the contract's ``marginAt`` through ``eth_call``
on the embedded EVM, and ``liquidate`` with a genuine signed update at that
price succeeds exactly when the margin says liquidatable. Half the cases are
built to sit at the boundary: equity == maintenance, or one wei either side.
Each example runs on a snapshot of one chain, reverted afterwards.
"""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
import trio
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from perpstream.chain import PositionLiquidated
from perpstream.chain.units import from_wad, to_wad
from perpstream.devchain import DevChain, MarketRisk, TransactionReverted
from perpstream.domain.margin import WAD, contract_margin, keeper_reward, pyth_price_to_wad
from perpstream.domain.prices import PythPrice

from .helpers import BTC


@attrs.frozen
class Case:
    is_long: bool
    size: int
    collateral: int
    entry: PythPrice
    exit: PythPrice
    entry_funding_index: int
    funding_index: int
    maintenance_margin_ratio: int
    liquidation_fee_ratio: int
    min_keeper_fee: int
    max_keeper_fee: int

    def margin(self, collateral: int | None = None) -> tuple[int, int, int]:
        """(equity, maintenance, reward) as the service computes them."""
        margin = contract_margin(
            is_long=self.is_long, size=self.size, collateral=self.collateral if collateral is None else collateral,
            entry_price=pyth_price_to_wad(self.entry.price, self.entry.expo),
            entry_funding_index=self.entry_funding_index, funding_index=self.funding_index,
            price=pyth_price_to_wad(self.exit.price, self.exit.expo),
            maintenance_margin_ratio=self.maintenance_margin_ratio,
        )
        reward = keeper_reward(margin, liquidation_fee_ratio=self.liquidation_fee_ratio,
                               min_keeper_fee=self.min_keeper_fee, max_keeper_fee=self.max_keeper_fee)
        return margin.equity, margin.maintenance, reward


def _pyth(draw: st.DrawFn) -> PythPrice:
    expo = draw(st.integers(-18, -2))
    mantissa = draw(st.integers(1, 2**63 - 1) | st.integers(1, 10**10))
    return PythPrice(price=mantissa, conf=0, expo=expo, publish_time=0)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    min_fee = draw(st.integers(0, 10**21))
    case = Case(
        is_long=draw(st.booleans()),
        size=draw(st.integers(1, 10**24)),
        collateral=draw(st.integers(1, 10**30)),
        entry=_pyth(draw),
        exit=_pyth(draw),
        entry_funding_index=draw(st.integers(-(10**24), 10**24)),
        funding_index=draw(st.integers(-(10**24), 10**24)),
        maintenance_margin_ratio=draw(st.integers(1, WAD - 1)),
        liquidation_fee_ratio=draw(st.integers(0, WAD - 1)),
        min_keeper_fee=min_fee,
        max_keeper_fee=min_fee + draw(st.integers(0, 10**22)),
    )
    offset = draw(st.none() | st.sampled_from([-1, 0, 1]))
    if offset is None:
        return case
    # At the boundary: the collateral that makes equity == maintenance + offset.
    equity_without_collateral, maintenance, _ = case.margin(collateral=0)
    collateral = maintenance + offset - equity_without_collateral
    assume(collateral >= 1)
    return attrs.evolve(case, collateral=collateral)


@pytest.fixture(scope="module")
def chain() -> DevChain:  # type: ignore[override]
    """One chain for every example (each reverts what it did)."""
    return DevChain.create(traders=1)


async def _check(chain: DevChain, case: Case) -> None:
    fork = await chain.snapshot()
    try:
        await chain.set_market_risk(BTC, MarketRisk(*map(from_wad, (
            case.maintenance_margin_ratio, case.liquidation_fee_ratio, case.min_keeper_fee, case.max_keeper_fee,
        ))))
        await chain.update_funding(BTC, rate_per_hour=Decimal(0), index=from_wad(case.entry_funding_index),
                                   timestamp=1)
        receipt = await chain.open_position(
            chain.traders[0], BTC, is_long=case.is_long, size=from_wad(case.size),
            collateral=from_wad(case.collateral), update_data=[await chain.price_update(BTC, case.entry)],
        )
        (position_id,) = receipt.opened_position_ids
        position = await chain.position(position_id)
        assert position is not None
        assert to_wad(position.entry_price) == pyth_price_to_wad(case.entry.price, case.entry.expo)
        await chain.update_funding(BTC, rate_per_hour=Decimal(0), index=from_wad(case.funding_index), timestamp=2)

        price = pyth_price_to_wad(case.exit.price, case.exit.expo)
        expected = case.margin()
        assert await chain.margin_at(position_id, price) == expected
        equity, maintenance, reward = expected
        liquidatable = equity < maintenance
        try:
            receipt = await chain.liquidate(
                chain.liquidator, position_id, update_data=[await chain.price_update(BTC, case.exit)]
            )
        except TransactionReverted as exc:
            assert not liquidatable, f"refused a liquidatable position: {exc}"
            assert "not liquidatable" in str(exc)
        else:
            assert liquidatable, "liquidated a position the service calls healthy"
            (event,) = receipt.events
            assert isinstance(event, PositionLiquidated)
            assert (to_wad(event.price), to_wad(event.reward)) == (price, reward)
    finally:
        await chain.revert(fork)


def _run(chain: DevChain, case: Case) -> None:
    trio.run(_check, chain, case)


_ONE_USD = PythPrice(price=100_000_000, conf=0, expo=-8, publish_time=0)
_BOUNDARY = Case(
    is_long=True, size=2 * WAD, collateral=10 * WAD, entry=attrs.evolve(_ONE_USD, price=100 * 10**8),
    exit=attrs.evolve(_ONE_USD, price=9_549_748_743), entry_funding_index=0, funding_index=0,
    maintenance_margin_ratio=5 * 10**15, liquidation_fee_ratio=5 * 10**15, min_keeper_fee=5 * WAD,
    max_keeper_fee=1000 * WAD,
)


def _at(offset: int, case: Case = _BOUNDARY) -> Case:
    equity_without_collateral, maintenance, _ = case.margin(collateral=0)
    return attrs.evolve(case, collateral=maintenance + offset - equity_without_collateral)


_SETTINGS = dict(deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@settings(max_examples=12, **_SETTINGS)  # type: ignore[arg-type]
@given(case=cases())
@example(case=_at(0))  # equity == maintenance: healthy
@example(case=_at(-1))  # one wei below: liquidatable
@example(case=_at(1))
@example(case=_at(-1, attrs.evolve(_BOUNDARY, is_long=False, exit=attrs.evolve(_ONE_USD, price=10_451_000_001),
                                   entry_funding_index=-3 * WAD + 7, funding_index=WAD // 3)))  # a short, with funding
def test_the_service_margin_is_the_contracts(chain: DevChain, case: Case) -> None:
    _run(chain, case)


@pytest.mark.slow
@settings(max_examples=400, **_SETTINGS)  # type: ignore[arg-type]
@given(case=cases())
def test_the_service_margin_is_the_contracts_on_many_more_cases(chain: DevChain, case: Case) -> None:
    _run(chain, case)

