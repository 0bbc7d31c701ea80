"""Builders for the pure market-core tests: prices, deliveries and store snapshots."""

from __future__ import annotations

from decimal import Decimal

from perpstream.chain.events import (
    EventMeta,
    Finality,
    IndexedEvent,
    PositionClosed,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    StoredPosition,
    StoredRecord,
)
from perpstream.chain.store import StoreSnapshot
from perpstream.domain import MarketParams, PriceUpdate, PythPrice
from perpstream.services.market_core import MarketCore, MarketSettings

BTC = "btc-usdc-perp"
ETH = "eth-usdc-perp"
ALICE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BOB = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
FEED = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"
T0_MS = 1_800_000_000_000


def params(market_id: str = BTC, mmr: str = "0.005") -> MarketParams:
    return MarketParams(
        market_id=market_id, base=market_id[:3].upper(), maintenance_margin_ratio=Decimal(mmr),
        liquidation_fee_ratio=Decimal("0.005"), min_keeper_fee=Decimal("5"), max_keeper_fee=Decimal("1000"),
        max_leverage=Decimal("150"), skew_scale=Decimal("1000"), max_funding_rate_per_hour=Decimal("0.0001"),
    )


def core(market_id: str = BTC, snapshot: StoreSnapshot | None = None, **settings: object) -> MarketCore:
    return MarketCore.rebuilt(params(market_id), MarketSettings(**settings),  # type: ignore[arg-type]
                              snapshot or StoreSnapshot(None, [], []), T0_MS)


def price(value: str, *, at_ms: int = T0_MS, slot: int | None = None, conf: str = "0",
          update_data: tuple[bytes, ...] = (b"\x01\x02",)) -> PriceUpdate:
    """A Pyth price with 8 decimals (expo −8), published at ``at_ms`` (whole seconds)."""
    mantissa = int(Decimal(value) * 10**8)
    confidence = int(Decimal(conf) * 10**8)
    publish_time = at_ms // 1000
    pyth = PythPrice(mantissa, confidence, -8, publish_time)
    return PriceUpdate(FEED, pyth, pyth, "simulated", slot=slot, update_data=update_data)


def pid(n: int) -> str:
    return f"0x{n:064x}"


def meta(block: int, log_index: int = 0, *, branch: str = "a") -> EventMeta:
    tag = {"a": 0xA, "b": 0xB}[branch]
    return EventMeta(block, f"0x{tag:x}{block:063x}", f"0x{tag:x}{block:059x}{log_index:04x}", log_index)


def stored(n: int, *, account: str = ALICE, market_id: str = BTC, is_long: bool = True, size: str = "1",
           collateral: str = "1000", entry: str = "65000", last_event: EventMeta | None = None,
           finality: Finality = "pending") -> StoredPosition:
    return StoredPosition(pid(n), account, market_id, is_long, Decimal(size), Decimal(collateral), Decimal(entry),
                          Decimal(0), last_event.block_number if last_event else 1, last_event, finality)


def delivery(event: object, finality: Finality, seq: int, *, before: StoredRecord | None = None,
             restored: StoredRecord | None = None) -> IndexedEvent:
    return IndexedEvent(event, finality, restored=restored, before=before, seq=seq)  # type: ignore[arg-type]


def opened(n: int, at: EventMeta, *, account: str = ALICE, market_id: str = BTC, is_long: bool = True,
           size: str = "1", collateral: str = "1000", entry: str = "65000") -> PositionOpened:
    return PositionOpened(at, pid(n), account, market_id, is_long, Decimal(size), Decimal(collateral),
                          Decimal(entry), Decimal(0))


def modified(n: int, at: EventMeta, *, size: str, collateral: str = "1000", entry: str = "65000") -> PositionModified:
    return PositionModified(at, pid(n), Decimal(size), Decimal(collateral), Decimal(entry), Decimal(0))


def closed(n: int, at: EventMeta, *, account: str = ALICE, market_id: str = BTC,
           exit_price: str = "65000") -> PositionClosed:
    return PositionClosed(at, pid(n), account, market_id, Decimal(exit_price), Decimal(0))


def liquidated(n: int, at: EventMeta, *, account: str = ALICE, market_id: str = BTC, liquidator: str = BOB,
               at_price: str = "64000") -> PositionLiquidated:
    return PositionLiquidated(at, pid(n), account, liquidator, market_id, Decimal(at_price), Decimal("5"))
