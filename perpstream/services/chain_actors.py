"""The chain subtree's actors: dev chain, indexer, and the demo's traders.

The indexer is the same against a real node and the embedded chain; only
its :class:`~perpstream.chain.ChainClient` differs. On the embedded chain a
:class:`DevChainActor` owns the in-process EVM (the "node") and mines a
block every ``block_interval_s`` so confirmations advance as on a real
chain; the demo actors send real transactions to it. They reach the node
through a :class:`NodeHandle` filled by the dev chain actor, which is what
a client's connection to a node is: the chain subtree restarts rest-for-one,
so a restarted dev chain takes the indexer and the demo actors with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal

import attrs
import trio

from actors import Actor, ActorContext, Policy
from perpstream.chain import (
    ChainClient,
    DemoLiquidator,
    DemoTrader,
    DevChain,
    FundingKeeper,
    IndexedEvent,
    Indexer,
    MarketRisk,
)
from perpstream.chain.indexer import IndexerStatus
from perpstream.chain.store import IndexerStore
from perpstream.chain.units import round_to_wad
from perpstream.protocol import Channel, Frame
from perpstream.services.messages import ChainDelivery
from perpstream.services.topics import market_name
from perpstream.streams import StreamKey

__all__ = [
    "DemoLiquidatorActor",
    "DemoTraderActor",
    "DevChainActor",
    "FundingKeeperActor",
    "IndexerActor",
    "NodeHandle",
]

log = logging.getLogger("perpstream.chain")


@attrs.define
class NodeHandle:
    """The running dev chain, for its siblings in the chain subtree."""

    chain: DevChain | None = None

    def get(self) -> DevChain:
        if self.chain is None:
            raise RuntimeError("the dev chain is not running")
        return self.chain


class DevChainActor(Actor):
    """Runs the embedded EVM with the exchange deployed; mines on a timer."""

    kind = "dev-chain"

    def __init__(
        self, node: NodeHandle, *, traders: int, block_interval_s: float, market_risk: dict[str, MarketRisk]
    ) -> None:
        self.node = node
        self.traders = traders
        self.block_interval_s = block_interval_s
        self.market_risk = market_risk

    async def setup(self, ctx: ActorContext) -> None:
        chain = await DevChain.start(traders=self.traders, market_risk=self.market_risk)
        self.node.chain = chain
        log.info("embedded chain up; exchange deployed at %s", chain.address)
        ctx.nursery.start_soon(self._mine)

    async def _mine(self) -> None:
        chain = self.node.get()
        while True:
            await trio.sleep(self.block_interval_s)
            await chain.mine(1)

    async def on_stop(self) -> None:
        self.node.chain = None

    def describe(self) -> dict[str, object]:
        return {"address": self.node.chain.address if self.node.chain else None}


def _route(indexed: IndexedEvent, markets: Sequence[str]) -> Sequence[str]:
    """Which markets a delivery concerns (a modification names none: all of them)."""
    market_id = getattr(indexed.event, "market_id", None) or getattr(indexed.restored, "market_id", None)
    if market_id is None:
        return markets
    return [market_id] if market_id in markets else []


class IndexerActor(Actor):
    """Indexes the exchange's events and delivers them to the markets, in order.

    An error retrying cannot fix (a reorg too deep, a reset chain, a fatal
    RPC error) stops the indexer but not this actor: it stays up, idle,
    with the reason in its status, because restarting would only repeat
    the error until the restart intensity took the whole daemon down.
    """

    kind = "indexer"

    def __init__(
        self,
        *,
        client: Callable[[], ChainClient],
        address: Callable[[], str],
        store: IndexerStore,
        markets: Sequence[str],
        confirmations: int,
        start_block: int,
        poll_interval_s: float,
        max_block_range: int,
        reset_on_mismatch: bool,
        status: Callable[[IndexerStatus], None],
    ) -> None:
        self._client = client
        self._address = address
        self._store = store
        self._markets = tuple(markets)
        self._settings = {
            "confirmations": confirmations, "start_block": start_block,
            "poll_interval_s": poll_interval_s, "max_block_range": max_block_range,
            "reset_on_mismatch": reset_on_mismatch,
        }
        self._publish_status = status
        self.indexer: Indexer | None = None

    async def setup(self, ctx: ActorContext) -> None:
        refs = {m: ctx.registry.ref(market_name(m)) for m in self._markets}

        async def deliver(indexed: IndexedEvent) -> None:
            # Awaiting the market's mailbox is deliberate back pressure: the
            # indexer reads no further than the markets can apply.
            for market_id in _route(indexed, self._markets):
                await refs[market_id].send(ChainDelivery(indexed))

        self.indexer = Indexer(
            self._client(), self._store, address=self._address(), on_event=deliver, **self._settings  # type: ignore[arg-type]
        )
        self._publish_status(self.indexer.status)
        await ctx.nursery.start(self.indexer.run)

    def describe(self) -> dict[str, object]:
        if self.indexer is None:
            return {}
        status = self.indexer.status
        return {
            "head_block": status.head_block,
            "indexed_block": status.indexed_block,
            "lag": status.lag,
            "events_applied": status.events_applied,
            "reorgs": status.reorgs,
            "decode_errors": status.decode_errors,
            "last_error": status.last_error,
            "halted": status.halted,
            "remedy": status.remedy,
        }


def _latest_field(ctx: ActorContext, key: StreamKey, field: str) -> Decimal | None:
    """A decimal field of a stream's newest snapshot, as any client would read it."""
    frame: Frame | None = ctx.registry.topic(key.topic, policy=Policy.CONFLATE, capacity=1).latest
    if frame is None:
        return None
    value = json.loads(frame.json()).get(field)
    return None if value is None else Decimal(value)


def _price_reader(ctx: ActorContext) -> Callable[[str], Decimal | None]:
    def price(market_id: str) -> Decimal | None:
        value = _latest_field(ctx, StreamKey(Channel.PRICES, market_id), "price")
        return None if value is None else round_to_wad(value)

    return price


class DemoTraderActor(Actor):
    """Trades the demo accounts at the oracle's prices."""

    kind = "demo-trader"

    def __init__(self, node: NodeHandle, *, markets: Sequence[str], seed: int, interval_s: float,
                 max_leverage: Decimal) -> None:
        self.node = node
        self.markets = tuple(markets)
        self.seed = seed
        self.interval_s = interval_s
        self.max_leverage = max_leverage
        self.trader: DemoTrader | None = None

    async def setup(self, ctx: ActorContext) -> None:
        self.trader = DemoTrader(
            self.node.get(), self.markets, _price_reader(ctx), seed=self.seed,
            interval_s=(self.interval_s * 0.5, self.interval_s * 1.5), max_leverage=self.max_leverage,
        )
        ctx.nursery.start_soon(self.trader.run)


class DemoLiquidatorActor(Actor):
    """Liquidates what the service's own liquidation stream calls liquidatable."""

    kind = "demo-liquidator"

    def __init__(self, node: NodeHandle, *, event_buffer: int) -> None:
        self.node = node
        self.event_buffer = event_buffer
        self.liquidator: DemoLiquidator | None = None

    async def setup(self, ctx: ActorContext) -> None:
        topic = ctx.registry.topic(StreamKey(Channel.LIQUIDATIONS).topic, policy=Policy.CONFLATE, capacity=1)

        async def candidates() -> AsyncIterator[str]:
            with topic.subscribe() as subscription:
                while True:
                    delivery = await subscription.receive()
                    alert = json.loads(delivery.item.json())
                    for candidate in alert["candidates"]:
                        if candidate["liquidatable"]:
                            yield candidate["position_id"]

        self.liquidator = DemoLiquidator(self.node.get(), _price_reader(ctx), candidates=candidates())
        ctx.nursery.start_soon(self.liquidator.run)

    def describe(self) -> dict[str, object]:
        if self.liquidator is None:
            return {}
        return {"liquidated": self.liquidator.liquidated, "refused": self.liquidator.refused}


class FundingKeeperActor(Actor):
    """Posts each market's model funding rate on chain, as a keeper bot would."""

    kind = "funding-keeper"

    def __init__(self, node: NodeHandle, *, markets: Sequence[str], interval_s: float,
                 clock: Callable[[], float]) -> None:
        self.node = node
        self.markets = tuple(markets)
        self.interval_s = interval_s
        self.clock = clock

    async def setup(self, ctx: ActorContext) -> None:
        def rate(market_id: str) -> Decimal | None:
            value = _latest_field(ctx, StreamKey(Channel.MARKET_STATS, market_id), "predicted_funding_rate")
            return None if value is None else round_to_wad(value)

        keeper = FundingKeeper(self.node.get(), self.markets, rate, _price_reader(ctx),
                               interval_s=self.interval_s, clock=self.clock)
        ctx.nursery.start_soon(keeper.run)
