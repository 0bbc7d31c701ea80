"""The embedded chain's actors: the dev chain itself and the demo's bots.

On the embedded chain a :class:`DevChainActor` owns the in-process EVM (the
"node") and mines a block every ``block_interval_s`` so confirmations
advance as on a real chain; the demo actors send real transactions to it.
They reach the node through a :class:`NodeHandle` filled by the dev chain
actor, which is what a client's connection to a node is: the chain subtree
restarts rest-for-one, so a restarted dev chain takes the indexer and the
demo actors with it. Trader and liquidator transact with the newest update
the :class:`~perpstream.devchain.SigningFeed` signed for the market.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import Decimal

import attrs
import trio

from actors import Actor, ActorContext, Policy
from perpstream.chain.units import round_to_wad
from perpstream.devchain import (
    DemoLiquidator,
    DemoTrader,
    DevChain,
    FundingKeeper,
    MarketRisk,
    OracleDomain,
    Quote,
    QuoteSource,
    SignedPrices,
)
from perpstream.protocol import Channel, Frame
from perpstream.streams import StreamKey

__all__ = [
    "DemoLiquidatorActor",
    "DemoTraderActor",
    "DevChainActor",
    "FundingKeeperActor",
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

    def oracle_domain(self) -> OracleDomain | None:
        """The running chain's oracle, which the signing feed signs for; None while down."""
        return self.chain.oracle_domain if self.chain is not None else None


class DevChainActor(Actor):
    """Runs the embedded EVM with oracle and exchange deployed; mines on a timer."""

    kind = "dev-chain"

    def __init__(
        self,
        node: NodeHandle,
        *,
        traders: int,
        block_interval_s: float,
        market_risk: Mapping[str, MarketRisk],
        market_feeds: Mapping[str, str],
    ) -> None:
        self.node = node
        self.traders = traders
        self.block_interval_s = block_interval_s
        self.market_risk = market_risk
        self.market_feeds = market_feeds

    async def setup(self, ctx: ActorContext) -> None:
        chain = await DevChain.start(
            traders=self.traders, market_risk=self.market_risk, market_feeds=self.market_feeds
        )
        self.node.chain = chain
        log.info("embedded chain up; exchange at %s, demo oracle at %s", chain.address, chain.oracle_address)
        ctx.nursery.start_soon(self._mine)

    async def _mine(self) -> None:
        chain = self.node.get()
        while True:
            await trio.sleep(self.block_interval_s)
            await chain.mine(1)

    async def on_stop(self) -> None:
        self.node.chain = None

    def describe(self) -> dict[str, object]:
        chain = self.node.chain
        return {
            "address": chain.address if chain else None,
            "oracle_address": chain.oracle_address if chain else None,
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


def _quote_reader(ctx: ActorContext, chain: DevChain, signed: SignedPrices) -> QuoteSource:
    """A market's price as the prices stream shows it, with the newest update signed for it."""
    price_of = _price_reader(ctx)

    def quote(market_id: str) -> Quote | None:
        price = price_of(market_id)
        update = signed.newest(chain.feed_id(market_id))
        if price is None or update is None:
            return None
        return Quote(price=price, update_data=update.update_data)

    return quote


class DemoTraderActor(Actor):
    """Trades the demo accounts at the oracle's prices."""

    kind = "demo-trader"

    def __init__(self, node: NodeHandle, signed: SignedPrices, *, markets: Sequence[str], seed: int,
                 interval_s: float, max_leverage: Decimal) -> None:
        self.node = node
        self.signed = signed
        self.markets = tuple(markets)
        self.seed = seed
        self.interval_s = interval_s
        self.max_leverage = max_leverage
        self.trader: DemoTrader | None = None

    async def setup(self, ctx: ActorContext) -> None:
        chain = self.node.get()
        self.trader = DemoTrader(
            chain, self.markets, _quote_reader(ctx, chain, self.signed), seed=self.seed,
            interval_s=(self.interval_s * 0.5, self.interval_s * 1.5), max_leverage=self.max_leverage,
        )
        ctx.nursery.start_soon(self.trader.run)

    def describe(self) -> dict[str, object]:
        return dict(self.trader.actions) if self.trader is not None else {}


class DemoLiquidatorActor(Actor):
    """Liquidates what the service's own liquidation stream calls liquidatable."""

    kind = "demo-liquidator"

    def __init__(self, node: NodeHandle, signed: SignedPrices, *, event_buffer: int) -> None:
        self.node = node
        self.signed = signed
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

        chain = self.node.get()
        self.liquidator = DemoLiquidator(chain, _quote_reader(ctx, chain, self.signed), candidates=candidates())
        ctx.nursery.start_soon(self.liquidator.run)

    def describe(self) -> dict[str, object]:
        if self.liquidator is None:
            return {}
        return {"liquidated": self.liquidator.liquidated, "refused": self.liquidator.refused,
                "refusals": dict(self.liquidator.refusals)}


class FundingKeeperActor(Actor):
    """Posts each market's model funding rate on chain, as a keeper bot would."""

    kind = "funding-keeper"

    def __init__(self, node: NodeHandle, *, markets: Sequence[str], interval_s: float,
                 clock: Callable[[], float]) -> None:
        self.node = node
        self.markets = tuple(markets)
        self.interval_s = interval_s
        self.clock = clock
        self.keeper: FundingKeeper | None = None

    async def setup(self, ctx: ActorContext) -> None:
        def rate(market_id: str) -> Decimal | None:
            value = _latest_field(ctx, StreamKey(Channel.MARKET_STATS, market_id), "predicted_funding_rate")
            return None if value is None else round_to_wad(value)

        self.keeper = FundingKeeper(self.node.get(), self.markets, rate, _price_reader(ctx),
                                    interval_s=self.interval_s, clock=self.clock)
        ctx.nursery.start_soon(self.keeper.run)

    def describe(self) -> dict[str, object]:
        return {"posted": self.keeper.posted} if self.keeper is not None else {}
