"""Builders shared by the domain tests."""

from __future__ import annotations

from decimal import Decimal

from perpstream.domain import MarketParams, Position, Side

ACCOUNT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def position_id(n: int) -> str:
    return f"0x{n:064x}"


def market(mmr: str = "0.05", **overrides: str) -> MarketParams:
    values = {
        "liquidation_fee_ratio": "0.01",
        "min_keeper_fee": "5",
        "max_keeper_fee": "100",
        "max_leverage": "20",
        "skew_scale": "1000",
        "max_funding_rate_per_hour": "0.001",
    }
    values.update(overrides)
    return MarketParams(
        market_id="btc-usdc-perp",
        base="BTC",
        maintenance_margin_ratio=Decimal(mmr),
        **{name: Decimal(value) for name, value in values.items()},
    )


def position(
    n: int = 1,
    side: Side = Side.LONG,
    *,
    size: str | Decimal = "1",
    collateral: str | Decimal = "10",
    entry_price: str | Decimal = "100",
    entry_funding_index: str | Decimal = "0",
    account: str = ACCOUNT,
) -> Position:
    return Position(
        position_id=position_id(n),
        account=account,
        market_id="btc-usdc-perp",
        side=side,
        size=Decimal(size),
        collateral=Decimal(collateral),
        entry_price=Decimal(entry_price),
        entry_funding_index=Decimal(entry_funding_index),
    )
