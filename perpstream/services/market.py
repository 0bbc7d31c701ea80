"""MarketActor: the trio shell around one market's :class:`MarketCore`.

The actor owns its market's state (a pure :class:`~perpstream.services.market_core.MarketCore`)
and does only the I/O: it feeds the core prices from the feed and deliveries
from the chain indexer, publishes what the core asks (``price_update``
throttled to ``prices_interval_ms`` on a grid every market shares, always the
newest, and kept at that cadence while the price is stale, so a client sees the true age grow;
``market_stats`` every ``market_stats_interval_ms`` and on the first price;
``funding_rate_update`` and ``liquidation_event`` as they happen), publishes
account events on the positions streams (kept in their history whether or
not anyone watches the account right now), and answers requests. Readers that want values
rather than messages use the query interface
(:class:`~perpstream.services.queries.MarketQueries`), where the actor
registers its core while it runs.

A restart rebuilds the core from the position store, then tells the
market's subscribers to ``resync`` before fresh snapshots follow. Deliveries
the store already reflects but whose messages never made it into the
stream history (the daemon was killed in between) are published then, so
a resuming client misses none of them.
"""

from __future__ import annotations

import logging
import math

import trio

from actors import Actor, ActorContext
from perpstream.clock import WallClock
from perpstream.config import MarketConfig
from perpstream.domain import MarketParams
from perpstream.protocol import Channel, Message, Resync
from perpstream.services.market_core import Effects, MarketCore, MarketSettings
from perpstream.services.messages import (
    ChainDelivery,
    GetUserPositions,
    PriceTick,
    UserPositions,
)
from perpstream.services.queries import MarketQueries
from perpstream.services.store import PositionSource
from perpstream.history import StreamHistory
from perpstream.services.topics import StreamPublisher, record_event
from perpstream.streams import StreamKey

__all__ = ["MarketActor", "MarketSettings", "market_params"]

log = logging.getLogger("perpstream.market")


def market_params(market: MarketConfig) -> MarketParams:
    """The domain's view of a configured market."""
    return MarketParams(
        market_id=market.id,
        base=market.base,
        maintenance_margin_ratio=market.maintenance_margin_ratio,
        liquidation_fee_ratio=market.liquidation_fee_ratio,
        min_keeper_fee=market.min_keeper_fee,
        max_keeper_fee=market.max_keeper_fee,
        max_leverage=market.max_leverage,
        skew_scale=market.funding.skew_scale,
        max_funding_rate_per_hour=market.funding.max_rate_per_hour,
    )


def next_price_slot(now: float, interval: float) -> float:
    """When the price after one published at ``now`` may go out: the first slot of the grid at least half an interval on.

    Every market of a process publishes on the same grid (multiples of the
    interval on trio's clock), so a tick's prices go out together: one burst
    for the connections, one write to the bus for a core, where markets each
    on their own phase made a burst per market, each delaying the next. On
    the grid the cadence is exact (no drift by the time publishing takes);
    a price published off it (the first, or one after a quiet spell) is
    followed at the next slot half an interval away or more.
    """
    return math.ceil((now + interval / 2) / interval) * interval


class MarketActor(Actor):
    """Owns one market; registered as ``markets/{market_id}``."""

    kind = "market"
    mailbox_capacity = 4096

    def __init__(
        self,
        market: MarketConfig,
        *,
        settings: MarketSettings,
        store: PositionSource,
        clock: WallClock,
        history: StreamHistory,
    ) -> None:
        self.market_id = market.id
        self.history = history
        self.params = market_params(market)
        self.settings = settings
        self.store = store
        self.clock = clock
        self.core = MarketCore(self.params, settings, clock.now_ms())
        self._price_dirty = trio.Event()
        self._ctx: ActorContext | None = None
        self._queries: MarketQueries | None = None
        self._prices: StreamPublisher | None = None
        self._stats: StreamPublisher | None = None
        self._liquidations: StreamPublisher | None = None

    # ------------------------------------------------------------ life cycle

    async def setup(self, ctx: ActorContext) -> None:
        self._ctx = ctx
        self.core = MarketCore.rebuilt(self.params, self.settings, self.store.snapshot(self.market_id),
                                       self.clock.now_ms())
        buffer = self.settings.event_buffer
        self._prices = StreamPublisher.of(ctx, StreamKey(Channel.PRICES, self.market_id), buffer, self.history)
        self._stats = StreamPublisher.of(ctx, StreamKey(Channel.MARKET_STATS, self.market_id), buffer, self.history)
        self._liquidations = StreamPublisher.of(ctx, StreamKey(Channel.LIQUIDATIONS), buffer, self.history)
        # Not ``ctx.incarnation > 1``: when the markets supervisor itself is
        # restarted (it escalated), its new cells count incarnations from 1
        # again, yet the topics (registry-owned) and their subscribers are the
        # same. An earlier incarnation always left a stats snapshot behind.
        if self._stats.topics.snapshots.latest is not None:
            for topics in (self._prices, self._stats):
                topics.publish_event(Resync(reason="market_restarted"), self.clock.now_ms())
        self._publish_stats()
        self._queries = MarketQueries.of(ctx.registry, self.clock.now_ms)
        self._queries.register(self.core)
        ctx.nursery.start_soon(self._publish_prices)
        ctx.nursery.start_soon(self._publish_stats_periodically)
        log.info("%s ready with %d open positions (deliveries after seq %d to apply)",
                 self.market_id, len(self.core.book), self.core.delivered_through)

    async def run(self, ctx: ActorContext) -> None:
        try:
            await super().run(ctx)
        finally:
            # Stopped or failed (perhaps half way through an input): from now
            # until the next incarnation registers, readers learn the market
            # is unavailable rather than read this state.
            self._withdraw()

    async def handle(self, msg: object) -> None:
        now_ms = self.clock.now_ms()
        if isinstance(msg, PriceTick):
            self._carry_out(self.core.on_price(msg.update, now_ms))
        elif isinstance(msg, ChainDelivery):
            told = self.history.told(self.market_id, msg.indexed)
            with self.history.chain_delivery(self.market_id, msg.indexed):
                self._carry_out(self.core.on_delivery(msg.indexed, now_ms, told=told))
            if msg.applied is not None:
                msg.applied.send(None)
        elif isinstance(msg, GetUserPositions):
            msg.reply.send(UserPositions(self.market_id, self.core.positions_of(msg.address, now_ms)))
        else:
            log.warning("%s: unexpected message %r", self.market_id, msg)

    def _withdraw(self) -> None:
        if self._queries is not None:
            self._queries.withdraw(self.core)

    def describe(self) -> dict[str, object]:
        return self.core.describe(self.clock.now_ms())

    # ------------------------------------------------------------ effects

    def _carry_out(self, effects: Effects) -> None:
        now_ms = self.clock.now_ms()
        if effects.refused is not None:
            log.warning("%s: input refused: %s", self.market_id, effects.refused)
        if effects.price_changed:
            self._price_dirty.set()
        if effects.stats_changed:
            self._publish_stats()
        assert self._stats is not None and self._liquidations is not None
        for message in effects.stats_events:
            self._stats.publish_event(message, now_ms)
        for event in effects.liquidation_events:
            self._liquidations.publish_event(event, now_ms)
            if self._queries is not None:
                self._queries.liquidation_events.publish(event)
        for account, user_message in effects.user_events:
            self._publish_user_event(account, user_message, now_ms)

    def _publish_user_event(self, account: str, message: Message, now_ms: int) -> None:
        """An account's event: into its stream's history, and to its subscribers if it has any."""
        assert self._ctx is not None
        key = StreamKey(Channel.POSITIONS, account)
        frame = record_event(key, message, now_ms, self.history)
        topic = self._ctx.registry.find_topic(key.events_topic)
        if topic is not None:
            topic.publish(frame)

    # ------------------------------------------------------------ timers

    def _price_due(self) -> bool:
        """A newer price waits, or the price is stale and its growing age must be shown."""
        now_ms = self.clock.now_ms()
        if self.core.went_stale(now_ms):
            log.warning("%s: price is stale (age %d ms)", self.market_id, self.core.age_ms(now_ms))
        return self._price_dirty.is_set() or (self.core.price is not None and self.core.is_stale(now_ms))

    async def _publish_prices(self) -> None:
        """Publish the newest price at once, then on the shared grid of the interval (every slot while stale)."""
        interval = self.settings.prices_interval_ms / 1000
        while True:
            if not self._price_due():
                with trio.move_on_after(interval):
                    await self._price_dirty.wait()
                continue
            self._price_dirty = trio.Event()
            message = self.core.price_message(self.clock.now_ms())
            if message is not None and self._prices is not None:
                self._prices.publish_snapshot(message, self.clock.now_ms())
            await trio.sleep_until(next_price_slot(trio.current_time(), interval))

    def _publish_stats(self) -> None:
        if self._stats is not None:
            self._stats.publish_snapshot(self.core.stats_message(self.clock.now_ms()), self.clock.now_ms())

    async def _publish_stats_periodically(self) -> None:
        while True:
            await trio.sleep(self.settings.market_stats_interval_ms / 1000)
            self._publish_stats()
