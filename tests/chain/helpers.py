"""Shared pieces of the chain tests."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

import attrs

from perpstream.chain import (
    ChainClient,
    ChainEvent,
    EventSink,
    IndexedEvent,
    Indexer,
    IndexerStore,
    PositionStore,
    StoredPosition,
)
from perpstream.devchain import DevChain, OnChainPosition, Quote

BTC = "btc-usdc-perp"
ETH = "eth-usdc-perp"


class Recorder:
    """An indexer sink that keeps every delivery."""

    def __init__(self) -> None:
        self.deliveries: list[IndexedEvent] = []

    async def __call__(self, delivery: IndexedEvent) -> None:
        self.deliveries.append(delivery)

    def events(self, finality: str) -> list[ChainEvent]:
        return [d.event for d in self.deliveries if d.finality == finality]

    def clear(self) -> None:
        self.deliveries.clear()


class SignedQuotes:
    """Quotes for the demo bots at the prices a test sets (``prices`` is read on every call).

    Each is signed by the chain's demo publisher with a publish time newer
    than the last one's and than the head block's when made (see
    :meth:`of`), so the oracle takes every update it is sent.
    """

    def __init__(self, chain: DevChain, prices: Mapping[str, Decimal | None], head_timestamp: int) -> None:
        self._chain = chain
        self._prices = prices
        self._last_publish_time = head_timestamp

    @classmethod
    async def of(cls, chain: DevChain, prices: Mapping[str, Decimal | None]) -> SignedQuotes:
        return cls(chain, prices, await chain.head_timestamp())

    def __call__(self, market_id: str) -> Quote | None:
        price = self._prices.get(market_id)
        if price is None:
            return None
        self._last_publish_time += 1
        return Quote(price, (self._chain.sign_price(market_id, price, self._last_publish_time),))


def make_indexer(
    chain: DevChain,
    db_path: Path,
    sink: EventSink,
    *,
    client: ChainClient | None = None,
    **options: Any,
) -> tuple[Indexer, IndexerStore]:
    """An indexer of ``chain`` (or of ``client``, a wrapper around it)."""
    store = IndexerStore(db_path)
    options.setdefault("confirmations", 3)
    indexer = Indexer(client or chain.client(), store, address=chain.address, on_event=sink, **options)
    return indexer, store


async def poll_until_caught_up(indexer: Indexer, *, max_polls: int = 200) -> int:
    """Poll until the indexer has read up to the head; returns the events applied."""
    applied = 0
    for _ in range(max_polls):
        outcome = await indexer.poll_once()
        applied += outcome.events
        if outcome.caught_up:
            return applied
    raise AssertionError(f"indexer not caught up after {max_polls} polls")


def as_chain_view(position: StoredPosition) -> OnChainPosition:
    """The fields of a stored position the contract's view also has."""
    fields = attrs.asdict(position, recurse=False)
    for indexer_only in ("opened_block", "last_event", "finality"):
        del fields[indexer_only]
    return OnChainPosition(**fields)


async def assert_store_matches_contract(chain: DevChain, store: PositionStore) -> None:
    """Positions and funding derived by the indexer equal the contract's own views."""
    on_chain = sorted(await chain.open_positions_view(), key=lambda p: p.position_id)
    derived = sorted(map(as_chain_view, store.open_positions()), key=lambda p: p.position_id)
    assert derived == on_chain
    for market_id in (BTC, ETH):
        rate, index, timestamp = await chain.funding(market_id)
        stored = store.funding(market_id)
        if timestamp == 0:
            assert stored is None
        else:
            assert stored is not None
            assert (stored.rate_per_hour, stored.funding_index, stored.timestamp) == (rate, index, timestamp)


def d(text: str) -> Decimal:
    return Decimal(text)
