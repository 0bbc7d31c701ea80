"""The embedded chain's actors: the dev chain itself and the demo's bots.

On the embedded chain a :class:`DevChainActor` owns the in-process EVM (the
"node") and mines a block every ``block_interval_s`` so confirmations
advance as on a real chain; the demo actors send real transactions to it.
They reach the node through a :class:`NodeHandle` filled by the dev chain
actor, which is what a client's connection to a node is: the chain subtree
restarts rest-for-one, so a restarted dev chain takes the indexer and the
demo actors with it. The bots read the markets through the typed
:class:`~perpstream.services.queries.MarketQueries`, never wire JSON. The
trader transacts with the newest update the
:class:`~perpstream.devchain.SigningFeed` signed for the market; the
liquidator acts on the markets' live ``liquidatable`` events, each with the
signed update of the very price the verdict was reached at, so the contract
judges what the service judged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import Decimal

import attrs
import trio

from actors import Actor, ActorContext
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
from perpstream.clock import WallClock
from perpstream.services.queries import MarketQueries, MarketUnavailable

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
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.traders = traders
        self.block_interval_s = block_interval_s
        self.market_risk = market_risk
        self.market_feeds = market_feeds
        self.wall_clock = wall_clock

    async def setup(self, ctx: ActorContext) -> None:
        chain = await DevChain.start(
            traders=self.traders, market_risk=self.market_risk, market_feeds=self.market_feeds
        )
        self.node.chain = chain
        log.info("embedded chain up; exchange at %s, demo oracle at %s", chain.address, chain.oracle_address)
        ctx.nursery.start_soon(self._mine)

    async def _mine(self) -> None:
        """An empty block whenever the chain has been idle for an interval.

        Confirmations then advance as on a real chain. Only when idle:
        eth-tester gives every block a timestamp at least one second past its
        parent's, so a fixed timer on top of busy trading (more than a block a
        second) runs chain time ahead of the wall clock without bound, until
        the oracle refuses every fresh price as too far from block time
        (``StalePrice``). Idle blocks let chain time fall back in step.
        """
        chain = self.node.get()
        while True:
            await trio.sleep(self.block_interval_s)
            if await chain.head_timestamp() <= self.wall_clock() - self.block_interval_s:
                await chain.mine(1)

    async def on_stop(self) -> None:
        self.node.chain = None

    def describe(self) -> dict[str, object]:
        chain = self.node.chain
        return {
            "address": chain.address if chain else None,
            "oracle_address": chain.oracle_address if chain else None,
        }


def _price_reader(queries: MarketQueries) -> Callable[[str], Decimal | None]:
    """A market's newest fresh price as a wad-exact decimal (None: none, stale or restarting)."""
    def price(market_id: str) -> Decimal | None:
        try:
            value = queries.price(market_id)
        except MarketUnavailable:
            return None
        return None if value is None else round_to_wad(value)

    return price


def _quote_reader(queries: MarketQueries, chain: DevChain, signed: SignedPrices) -> QuoteSource:
    """A market's newest price, with the newest update signed for it."""
    price_of = _price_reader(queries)

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
                 interval_s: float, max_leverage: Decimal, clock: WallClock) -> None:
        self.node = node
        self.signed = signed
        self.markets = tuple(markets)
        self.seed = seed
        self.interval_s = interval_s
        self.max_leverage = max_leverage
        self.clock = clock
        self.trader: DemoTrader | None = None

    async def setup(self, ctx: ActorContext) -> None:
        chain = self.node.get()
        queries = MarketQueries.of(ctx.registry, self.clock.now_ms)
        self.trader = DemoTrader(
            chain, self.markets, _quote_reader(queries, chain, self.signed), seed=self.seed,
            interval_s=(self.interval_s * 0.5, self.interval_s * 1.5), max_leverage=self.max_leverage,
        )
        ctx.nursery.start_soon(self.trader.run)

    def describe(self) -> dict[str, object]:
        return dict(self.trader.actions) if self.trader is not None else {}


class DemoLiquidatorActor(Actor):
    """Liquidates the positions the markets announce as liquidatable, as a bot would.

    It acts on each ``liquidatable`` liquidation event in the tick it is
    published, with the event's own oracle update: the contract then judges
    at the price the service judged at, so a refusal is a race (someone
    moved the position or a newer price first), not a disagreement.
    """

    kind = "demo-liquidator"

    def __init__(self, node: NodeHandle, signed: SignedPrices, *, clock: WallClock) -> None:
        self.node = node
        self.signed = signed
        self.clock = clock
        self.liquidator: DemoLiquidator | None = None

    async def setup(self, ctx: ActorContext) -> None:
        queries = MarketQueries.of(ctx.registry, self.clock.now_ms)
        events = queries.liquidation_events.subscribe()

        async def candidates() -> AsyncIterator[tuple[str, tuple[bytes, ...]]]:
            with events as subscription:
                while True:
                    event = (await subscription.receive()).item
                    if event.kind == "liquidatable":
                        yield event.position_id, tuple(bytes.fromhex(h.removeprefix("0x")) for h in event.update_data)

        chain = self.node.get()
        self.liquidator = DemoLiquidator(chain, _quote_reader(queries, chain, self.signed), candidates=candidates())
        ctx.nursery.start_soon(self.liquidator.run)

    def describe(self) -> dict[str, object]:
        if self.liquidator is None:
            return {}
        return {"liquidated": self.liquidator.liquidated, "refused": self.liquidator.refused,
                "refusals": dict(self.liquidator.refusals)}


class FundingKeeperActor(Actor):
    """Posts each market's model funding rate on chain, as a keeper bot would."""

    kind = "funding-keeper"

    def __init__(self, node: NodeHandle, *, markets: Sequence[str], interval_s: float, clock: WallClock) -> None:
        self.node = node
        self.markets = tuple(markets)
        self.interval_s = interval_s
        self.clock = clock
        self.keeper: FundingKeeper | None = None

    async def setup(self, ctx: ActorContext) -> None:
        queries = MarketQueries.of(ctx.registry, self.clock.now_ms)

        def rate(market_id: str) -> Decimal | None:
            try:
                return round_to_wad(queries.predicted_funding_rate(market_id))
            except MarketUnavailable:
                return None

        self.keeper = FundingKeeper(self.node.get(), self.markets, rate, _price_reader(queries),
                                    interval_s=self.interval_s, clock=self.clock.now)
        ctx.nursery.start_soon(self.keeper.run)

    def describe(self) -> dict[str, object]:
        return {"posted": self.keeper.posted} if self.keeper is not None else {}
