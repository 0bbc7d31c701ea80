"""The reference contract: artifact freshness, the exact event ABI, behaviour."""

from __future__ import annotations

import importlib.util
import json
import time
from decimal import Decimal

import pytest

from perpstream.chain import (
    FundingUpdated,
    PositionClosed,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    load_artifact,
)
from perpstream.chain.artifact import ORACLE_CONTRACT_NAME, source_sha256
from perpstream.chain.units import from_wad
from perpstream.devchain import DevChain, MarketRisk, OpenOrder, TransactionReverted

from .helpers import BTC, ETH, d

# The exchange's events as the indexer decodes them: (name, type, indexed) in order.
EXPECTED_EVENTS = {
    "PositionOpened": [
        ("positionId", "bytes32", True), ("account", "address", True), ("marketId", "bytes32", True),
        ("isLong", "bool", False), ("size", "uint256", False), ("collateral", "uint256", False),
        ("entryPrice", "uint256", False), ("entryFundingIndex", "int256", False),
    ],
    "PositionModified": [
        ("positionId", "bytes32", True), ("size", "uint256", False), ("collateral", "uint256", False),
        ("entryPrice", "uint256", False), ("entryFundingIndex", "int256", False),
    ],
    "PositionClosed": [
        ("positionId", "bytes32", True), ("account", "address", True), ("marketId", "bytes32", True),
        ("exitPrice", "uint256", False), ("realizedPnl", "int256", False),
    ],
    "PositionLiquidated": [
        ("positionId", "bytes32", True), ("account", "address", True), ("liquidator", "address", True),
        ("marketId", "bytes32", False), ("price", "uint256", False), ("reward", "uint256", False),
    ],
    "FundingUpdated": [
        ("marketId", "bytes32", True), ("fundingRatePerHour", "int256", False),
        ("fundingIndex", "int256", False), ("timestamp", "uint256", False),
    ],
}


def test_artifacts_were_built_from_the_committed_sources() -> None:
    assert load_artifact().source_sha256 == source_sha256()
    oracle = load_artifact(ORACLE_CONTRACT_NAME)
    assert oracle.source_sha256 == source_sha256(name=ORACLE_CONTRACT_NAME)


@pytest.mark.skipif(
    importlib.util.find_spec("vyper") is None, reason="vyper (the contracts extra) is not installed"
)
@pytest.mark.parametrize("name", ["PerpExchange", ORACLE_CONTRACT_NAME])
def test_artifact_matches_a_fresh_compile(name: str) -> None:
    from perpstream.devchain.build_contract import compile_artifact

    fresh = compile_artifact(name)
    committed = load_artifact(name)
    assert fresh.compiler == committed.compiler
    assert fresh.bytecode == committed.bytecode
    assert json.dumps(fresh.abi, sort_keys=True) == json.dumps(committed.abi, sort_keys=True)


def test_events_are_exactly_the_domain_abi() -> None:
    events = {
        entry["name"]: [(i["name"], i["type"], i["indexed"]) for i in entry["inputs"]]
        for entry in load_artifact().abi
        if entry["type"] == "event"
    }
    assert events == EXPECTED_EVENTS
    assert not any(e.get("anonymous") for e in load_artifact().abi if e["type"] == "event")


async def open_btc(chain: DevChain, account: str, *, is_long: bool = True, size: str = "2",
                   collateral: str = "1000", price: str = "100") -> str:
    receipt = await chain.open_position(
        account, BTC, is_long=is_long, size=d(size), collateral=d(collateral), entry_price=d(price)
    )
    (event,) = receipt.events
    assert isinstance(event, PositionOpened)
    return event.position_id


async def test_open_modify_close_emit_the_bookkept_values(chain: DevChain) -> None:
    trader = chain.traders[0]
    pid = await open_btc(chain, trader, is_long=False, size="1.5", collateral="300", price="64000.25")
    position = await chain.position(pid)
    assert position is not None
    assert (position.account, position.market_id, position.is_long) == (trader, BTC, False)
    assert (position.size, position.collateral, position.entry_price) == (d("1.5"), d("300"), d("64000.25"))

    # Funding moves on: modifying settles what the short is owed into its collateral,
    # and reducing realizes the removed part's pnl at the oracle's price.
    await chain.update_funding(BTC, rate_per_hour=d("0.0001"), index=d("2"), timestamp=int(time.time()))
    receipt = await chain.modify_position(trader, pid, size=d("1"), collateral=d("300"), price=d("64000"))
    (modified,) = receipt.events
    assert isinstance(modified, PositionModified)
    # short: owed = -1.5 * (2 - 0) = -3; removed 0.5 short from 64000.25 to 64000: +0.125
    assert (modified.size, modified.collateral, modified.entry_funding_index) == (d("1"), d("303.125"), d("2"))
    assert modified.entry_price == d("64000.25")  # a reduction keeps the entry price

    receipt = await chain.close_position(trader, pid, exit_price=d("63000"))
    (closed,) = receipt.events
    assert isinstance(closed, PositionClosed)
    assert closed.realized_pnl == d("1000.25")  # short 1 from 64000.25 to 63000, no funding since modify
    assert (closed.account, closed.market_id, closed.exit_price) == (trader, BTC, d("63000"))
    assert await chain.position(pid) is None


async def test_adding_size_averages_the_entry_at_the_oracle_price(chain: DevChain) -> None:
    trader = chain.traders[0]
    pid = await open_btc(chain, trader, size="1", collateral="1000", price="100")
    receipt = await chain.modify_position(trader, pid, size=d("3"), collateral=d("1000"), price=d("103"))
    (modified,) = receipt.events
    assert isinstance(modified, PositionModified)
    # (1 * 100 + 2 * 103) / 3 = 102, collateral unchanged (no funding, nothing realized)
    assert (modified.size, modified.collateral, modified.entry_price) == (d("3"), d("1000"), d("102"))
    receipt = await chain.modify_position(trader, pid, size=d("4"), collateral=d("1000"), price=d("100"))
    (modified,) = receipt.events
    # (3 * 102 + 100) / 4 = 101.5; an inexact average rounds down in wei
    assert isinstance(modified, PositionModified) and modified.entry_price == d("101.5")
    receipt = await chain.modify_position(trader, pid, size=d("7"), collateral=d("1000"), price=d("100.01"))
    (modified,) = receipt.events
    assert isinstance(modified, PositionModified)
    expected_wad = (4 * 10**18 * 1015 * 10**17 + 3 * 10**18 * 10001 * 10**16) // (7 * 10**18)
    assert modified.entry_price == from_wad(expected_wad)


async def test_only_the_account_modifies_or_closes(chain: DevChain) -> None:
    pid = await open_btc(chain, chain.traders[0])
    with pytest.raises(TransactionReverted, match="not the position's account"):
        await chain.close_position(chain.traders[1], pid, exit_price=d("100"))
    with pytest.raises(TransactionReverted, match="no such position"):
        await chain.close_position(chain.traders[0], "0x" + "11" * 32, exit_price=d("100"))


async def test_liquidation_needs_equity_below_maintenance(chain: DevChain) -> None:
    # long 2 @ 100 with 10 collateral: equity = 10 + 2 (P - 100); maintenance = 2P * 0.005
    pid = await open_btc(chain, chain.traders[0], size="2", collateral="10", price="100")
    with pytest.raises(TransactionReverted, match="not liquidatable"):
        await chain.liquidate(chain.liquidator, pid, price=d("96"))  # equity 2 > 0.96
    receipt = await chain.liquidate(chain.liquidator, pid, price=d("95.4"))  # equity 0.8 < 0.954
    (event,) = receipt.events
    assert isinstance(event, PositionLiquidated)
    assert event.liquidator == chain.liquidator
    assert event.account == chain.traders[0]
    # reward: clamp(190.8 * 0.005, 5, 1000) = 5, capped at the remaining equity 0.8
    assert (event.price, event.reward) == (d("95.4"), d("0.8"))
    with pytest.raises(TransactionReverted, match="no such position"):
        await chain.liquidate(chain.liquidator, pid, price=d("50"))


async def test_per_market_risk_overrides_the_default() -> None:
    chain = await DevChain.start(
        traders=1, market_risk={ETH: MarketRisk(maintenance_margin_ratio=Decimal("0.1"))}
    )
    trader = chain.traders[0]
    receipt = await chain.open_position(
        trader, ETH, is_long=True, size=d("1"), collateral=d("20"), entry_price=d("100")
    )
    eth_pid = receipt.opened_position_ids[0]
    btc_pid = await open_btc(chain, trader, size="1", collateral="20", price="100")
    # at 90: equity 10; ETH maintenance 9 (ratio 0.1) -> healthy; BTC maintenance 0.45 -> healthy
    # at 88: equity 8; ETH maintenance 8.8 -> liquidatable; BTC 0.44 -> healthy
    with pytest.raises(TransactionReverted):
        await chain.liquidate(chain.liquidator, btc_pid, price=d("88"))
    receipt = await chain.liquidate(chain.liquidator, eth_pid, price=d("88"))
    (liquidated,) = receipt.events
    assert isinstance(liquidated, PositionLiquidated)
    assert liquidated.reward == d("5")  # the min keeper fee, under the equity of 8


async def test_funding_is_keeper_only_and_monotonic_in_time(chain: DevChain) -> None:
    receipt = await chain.update_funding(BTC, rate_per_hour=d("-0.00005"), index=d("-1.25"), timestamp=1000)
    (event,) = receipt.events
    assert isinstance(event, FundingUpdated)
    assert (event.market_id, event.funding_rate_per_hour, event.funding_index, event.timestamp) == (
        BTC, d("-0.00005"), d("-1.25"), 1000
    )
    with pytest.raises(TransactionReverted, match="only a keeper"):
        await chain.update_funding(
            BTC, rate_per_hour=d("0"), index=d("0"), timestamp=2000, account=chain.traders[0]
        )
    with pytest.raises(TransactionReverted, match="backwards"):
        await chain.update_funding(BTC, rate_per_hour=d("0"), index=d("0"), timestamp=999)
    # a new position starts at the market's current index
    pid = await open_btc(chain, chain.traders[0])
    position = await chain.position(pid)
    assert position is not None and position.entry_funding_index == d("-1.25")


async def test_batch_open_emits_one_event_per_order_in_order(chain: DevChain) -> None:
    orders = [
        OpenOrder(BTC if i % 2 else ETH, i % 3 == 0, d(f"0.{i + 1}"), d("50"), d("1000")) for i in range(5)
    ]
    receipt = await chain.open_positions(chain.traders[0], orders)
    opened = [e for e in receipt.events if isinstance(e, PositionOpened)]
    first = opened[0].meta.log_index  # after the oracle's PriceFeedUpdate logs
    assert [e.meta.log_index for e in opened] == list(range(first, first + 5))
    assert [(e.market_id, e.is_long, e.size) for e in opened] == [(o.market_id, o.is_long, o.size) for o in orders]
    assert len(set(receipt.opened_position_ids)) == 5
