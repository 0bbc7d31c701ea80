"""MarketActor: one market's price, positions, open interest, funding and risk.

The actor is the single owner of its market's state. Prices arrive from the
feed, position changes from the chain indexer; it publishes ``price_update``
(throttled to ``prices_interval_ms``, always the newest) and ``market_stats``
(every ``market_stats_interval_ms``) to its topics, ``funding_rate_update``
when the rate changes, and tells user sessions about their events and about
risk-level crossings. It answers requests for snapshots.

Warnings are raised once per crossing: the actor remembers each at-risk
position's level and speaks only when a position moves to a *worse* level.
A price tick costs a liquidation-index query, ``O(log n + k)`` for ``k``
positions at risk, not a scan. Nothing risk-related is raised on a stale
price. A restart rebuilds the state from the position store, then tells the
market's subscribers to ``resync`` before fresh snapshots follow.
"""

from __future__ import annotations

import logging
from collections import deque
from decimal import Decimal

import attrs
import trio

from actors import Actor, ActorContext, ActorNotFound, MailboxFull
from perpstream.chain.events import (
    FundingUpdated,
    IndexedEvent,
    PositionClosed,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    StoredFunding,
    StoredPosition,
)
from perpstream.clock import WallClock
from perpstream.config import MarketConfig
from perpstream.domain import (
    FundingState,
    MarketParams,
    Position,
    PositionBook,
    PriceUpdate,
    RiskLevel,
    Side,
    model_funding_rate,
    position_risk,
)
from perpstream.protocol import (
    Channel,
    FundingRateUpdate,
    LiquidationWarning,
    MarketStats,
    Resync,
)
from perpstream.protocol import PriceUpdate as PriceMessage
from perpstream.services import user_events
from perpstream.services.messages import (
    ChainDelivery,
    GetCandidates,
    GetMarketState,
    GetUserPositions,
    MarketCandidates,
    MarketState,
    PriceTick,
    UserEvent,
    UserPositions,
)
from perpstream.services.store import PositionSource
from perpstream.services.topics import StreamTopics, session_name
from perpstream.services.views import candidate_view, position_from_stored, position_view, round_places
from perpstream.streams import StreamKey

__all__ = ["MarketActor", "MarketSettings", "market_params"]

log = logging.getLogger("perpstream.market")

_DAY_MS = 24 * 3600 * 1000


@attrs.frozen
class MarketSettings:
    """The cadences and thresholds a MarketActor runs with."""

    prices_interval_ms: int = 1000
    market_stats_interval_ms: int = 5000
    stale_after_ms: int = 10_000
    event_buffer: int = 256


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
    ) -> None:
        self.market_id = market.id
        self.feed_id = market.pyth_feed_id
        self.params = market_params(market)
        self.settings = settings
        self.store = store
        self.clock = clock
        self.book = PositionBook(self.params)
        self.funding = FundingState.start(0)
        self.price: PriceUpdate | None = None
        self.levels: dict[str, RiskLevel] = {}  # last level reported, at-risk positions only
        self.volume: deque[tuple[int, Decimal]] = deque()
        self.volume_total = Decimal(0)
        self.ticks = 0
        self.warnings = 0
        # Deliveries at or below the snapshot's block are already in the book
        # (a restart reloads the store while older deliveries wait in the mailbox).
        self.applied_through = -1
        self._price_dirty = trio.Event()
        self._stale_announced = False
        self._ctx: ActorContext | None = None
        self._prices: StreamTopics | None = None
        self._stats: StreamTopics | None = None

    # ------------------------------------------------------------ life cycle

    async def setup(self, ctx: ActorContext) -> None:
        self._ctx = ctx
        now_ms = self.clock.now_ms()
        snapshot = self.store.snapshot(self.market_id)
        if snapshot.cursor is not None:
            self.applied_through = snapshot.cursor.block_number
        for stored in snapshot.positions:
            self.book.open(position_from_stored(stored))
        self.funding = FundingState.start(now_ms, rate_per_hour=self._model_rate())
        for stored_funding in snapshot.funding:
            self._set_chain_funding(stored_funding)
        buffer = self.settings.event_buffer
        self._prices = StreamTopics.of(ctx, StreamKey(Channel.PRICES, self.market_id), buffer)
        self._stats = StreamTopics.of(ctx, StreamKey(Channel.MARKET_STATS, self.market_id), buffer)
        # Not ``ctx.incarnation > 1``: when the markets supervisor itself is
        # restarted (it escalated), its new cells count incarnations from 1
        # again, yet the topics (registry-owned) and their subscribers are the
        # same. An earlier incarnation always left a stats snapshot behind.
        if self._stats.snapshots.latest is not None:
            for topics in (self._prices, self._stats):
                topics.publish_event(Resync(reason="market_restarted"), self.clock.now_ms())
        self._publish_stats()
        ctx.nursery.start_soon(self._publish_prices)
        ctx.nursery.start_soon(self._publish_stats_periodically)
        ctx.nursery.start_soon(self._watch_staleness)
        log.info("%s ready with %d open positions", self.market_id, len(self.book))

    async def handle(self, msg: object) -> None:
        if isinstance(msg, PriceTick):
            self._on_price(msg.update)
        elif isinstance(msg, ChainDelivery):
            self._on_chain(msg.indexed)
        elif isinstance(msg, GetUserPositions):
            msg.reply.send(UserPositions(self.market_id, self._user_views(msg.address)))
        elif isinstance(msg, GetCandidates):
            msg.reply.send(self._candidates(msg.limit))
        elif isinstance(msg, GetMarketState):
            msg.reply.send(self._state(with_positions=msg.with_positions))
        else:
            log.warning("%s: unexpected message %r", self.market_id, msg)

    def describe(self) -> dict[str, object]:
        return {
            "market_id": self.market_id,
            "open_positions": len(self.book),
            "at_risk": len(self.levels),
            "price_publish_time": self.price.publish_time if self.price else None,
            "stale": self.is_stale(),
            "ticks": self.ticks,
            "warnings": self.warnings,
        }

    # ------------------------------------------------------------ prices

    def is_stale(self) -> bool:
        """No price yet, or the newest is older than ``stale_after_ms`` by publish time."""
        if self.price is None:
            return True
        return self._age_ms() > self.settings.stale_after_ms

    def _age_ms(self) -> int:
        assert self.price is not None
        return max(0, self.clock.now_ms() - self.price.publish_time * 1000)

    def _on_price(self, update: PriceUpdate) -> None:
        if self.price is not None and update.publish_time < self.price.publish_time:
            return  # the feed filters these too; a restart may replay one
        self.ticks += 1
        self.price = update
        self._stale_announced = False
        self.funding = self.funding.advanced(
            self.clock.now_ms(), price=update.price.value, model_rate=self._model_rate()
        )
        self._price_dirty.set()
        if not self.is_stale():
            self._check_risk()

    async def _publish_prices(self) -> None:
        """Publish the newest price at once, then at most once per interval."""
        interval = self.settings.prices_interval_ms / 1000
        while True:
            await self._price_dirty.wait()
            self._price_dirty = trio.Event()
            self._publish_price()
            await trio.sleep(interval)

    async def _watch_staleness(self) -> None:
        """Announce once that a quiet feed has made this market's price stale."""
        while True:
            await trio.sleep(self.settings.prices_interval_ms / 1000)
            if self.price is not None and not self._stale_announced and self.is_stale():
                self._stale_announced = True
                log.warning("%s: price is stale (age %d ms)", self.market_id, self._age_ms())
                self._price_dirty.set()

    def _price_message(self) -> PriceMessage | None:
        if self.price is None:
            return None
        return PriceMessage(
            price=self.price.price.value,
            confidence=self.price.price.confidence,
            ema_price=self.price.ema_price.value,
            publish_time=self.price.publish_time,
            age_ms=self._age_ms(),
            stale=self.is_stale(),
            source=self.price.source,
        )

    def _publish_price(self) -> None:
        message = self._price_message()
        if message is not None and self._prices is not None:
            self._prices.publish_snapshot(message, self.clock.now_ms())

    # ------------------------------------------------------------ risk

    def _funding_index_now(self) -> Decimal:
        return self.funding.index_at(self.clock.now_ms())

    def _check_risk(self) -> None:
        """Find positions whose level changed; warn on every crossing to a worse level."""
        assert self.price is not None
        query = self.book.liquidation_index.query(
            self.price.price.value, self.price.price.confidence, self._funding_index_now()
        )
        at_risk = query.crossed(RiskLevel.WARNING)
        previous = self.levels
        current: dict[str, RiskLevel] = {}
        for position_id in at_risk:
            level = query.level_of(position_id)
            current[position_id] = level
            before = previous.get(position_id, RiskLevel.SAFE)
            if level.severity > before.severity:
                self._warn(position_id, level)
        self.levels = current

    def _warn(self, position_id: str, level: RiskLevel) -> None:
        assert self.price is not None
        position = self.book.get(position_id)
        if position is None:
            return
        risk = position_risk(
            position, self.price.price.value, self.price.price.confidence,
            self._funding_index_now(), self.params,
        )
        self.warnings += 1
        message = LiquidationWarning(
            position_id=position_id,
            market_id=self.market_id,
            health_factor=round_places(risk.health_factor, 6),
            liquidation_price=round_places(risk.liquidation_price, 8),
            mark_price=risk.mark_price,
            severity=level.value,
        )
        self._tell_user(position.account, message)

    def _tell_user(self, account: str, message: object) -> None:
        """Hand an event to the account's session, if anyone is watching it."""
        assert self._ctx is not None
        try:
            self._ctx.registry.ref(session_name(account)).send_nowait(UserEvent(message))  # type: ignore[arg-type]
        except ActorNotFound:
            pass  # no session: nobody subscribed to this account
        except MailboxFull:
            # The session is far behind; it resyncs its clients rather than
            # have them miss an event silently.
            log.warning("%s: session of %s is full; it will resync", self.market_id, account)

    # ------------------------------------------------------------ chain events

    def _on_chain(self, indexed: IndexedEvent) -> None:
        event = indexed.event
        block = event.meta.block_number
        if indexed.finality == "pending" and block <= self.applied_through:
            return  # already part of the snapshot this incarnation started from
        if indexed.finality == "reverted":
            self.applied_through = min(self.applied_through, block - 1)
        if isinstance(event, FundingUpdated):
            self._on_funding_event(indexed, event)
            return
        account = self._account_of(indexed)
        # The event message describes the position as it was before a close
        # (side, size) and as it is after anything else.
        before = self.book.get(event.position_id)
        if indexed.finality == "pending":
            self._apply(event)
        elif indexed.finality == "reverted":
            restored = indexed.restored
            position_id = event.position_id
            if restored is None or isinstance(restored, StoredPosition):
                self._set_position(position_id, None if restored is None else position_from_stored(restored))
        if account is not None:
            message = user_events.position_event(indexed, self.book.get(event.position_id) or before)
            self._tell_user(account, message)

    def _account_of(self, indexed: IndexedEvent) -> str | None:
        event = indexed.event
        account = getattr(event, "account", None)
        if account is None:
            position = self.book.get(event.position_id)  # type: ignore[union-attr]
            if position is not None:
                account = position.account
            elif isinstance(indexed.restored, StoredPosition):
                account = indexed.restored.account
        return account

    def _apply(self, event: PositionOpened | PositionModified | PositionClosed | PositionLiquidated) -> None:
        now_ms = self.clock.now_ms()
        if isinstance(event, PositionOpened):
            position = Position(
                position_id=event.position_id, account=event.account, market_id=self.market_id,
                side=Side.from_is_long(event.is_long), size=event.size, collateral=event.collateral,
                entry_price=event.entry_price, entry_funding_index=event.entry_funding_index,
            )
            self._set_position(event.position_id, position)
            self._add_volume(now_ms, event.size * event.entry_price)
        elif isinstance(event, PositionModified):
            before = self.book.get(event.position_id)
            if before is None:
                return  # another market's position (modifications carry no market id)
            after = attrs.evolve(
                before, size=event.size, collateral=event.collateral,
                entry_price=event.entry_price, entry_funding_index=event.entry_funding_index,
            )
            self._set_position(event.position_id, after)
            self._add_volume(now_ms, abs(event.size - before.size) * event.entry_price)
        else:
            before = self.book.get(event.position_id)
            self._set_position(event.position_id, None)
            if before is not None:
                exit_price = event.exit_price if isinstance(event, PositionClosed) else event.price
                self._add_volume(now_ms, before.size * exit_price)

    def _set_position(self, position_id: str, position: Position | None) -> None:
        """Set-semantics: make the book hold exactly ``position`` (None: closed)."""
        skew_before = self.book.open_interest.skew
        if position is None:
            if position_id in self.book:
                self.book.close(position_id)
            self.levels.pop(position_id, None)
        elif position_id in self.book:
            self.book.modify(position)
        else:
            self.book.open(position)
        if self.book.open_interest.skew != skew_before:
            self._on_skew_change()

    def _on_skew_change(self) -> None:
        previous = self.funding.rate_per_hour
        self.funding = self.funding.advanced(self.clock.now_ms(), model_rate=self._model_rate())
        if self.funding.rate_per_hour != previous:
            self._announce_funding(previous, source="model")

    def _model_rate(self) -> Decimal:
        return model_funding_rate(self.book.open_interest.skew, self.params)

    def _on_funding_event(self, indexed: IndexedEvent, event: FundingUpdated) -> None:
        if indexed.finality == "final":
            return
        previous = self.funding.rate_per_hour
        if indexed.finality == "pending":
            self._set_chain_funding(
                StoredFunding(self.market_id, event.funding_rate_per_hour, event.funding_index,
                              event.timestamp, event.meta.block_number)
            )
        elif isinstance(indexed.restored, StoredFunding):
            self._set_chain_funding(indexed.restored)
        else:
            # The only chain funding update was undone: the model drives again.
            self.funding = FundingState.start(
                self.clock.now_ms(), index=self._funding_index_now(), rate_per_hour=self._model_rate()
            ).advanced(self.clock.now_ms(), price=self.price.price.value if self.price else None)
        if self.funding.rate_per_hour != previous:
            self._announce_funding(previous, source=self.funding.source.value)

    def _set_chain_funding(self, stored: StoredFunding) -> None:
        self.funding = self.funding.with_chain_update(
            rate_per_hour=stored.rate_per_hour, index=stored.funding_index, timestamp_ms=stored.timestamp * 1000
        )

    def _announce_funding(self, previous: Decimal, *, source: str) -> None:
        if self._stats is None:
            return
        message = FundingRateUpdate(
            funding_rate=self.funding.rate_per_hour,
            previous_funding_rate=previous,
            funding_index=round_places(self._funding_index_now(), 18),
            source=source,
        )
        self._stats.publish_event(message, self.clock.now_ms())

    def _add_volume(self, now_ms: int, usd: Decimal) -> None:
        self.volume.append((now_ms, usd))
        self.volume_total += usd
        self._prune_volume(now_ms)

    def _prune_volume(self, now_ms: int) -> None:
        while self.volume and self.volume[0][0] <= now_ms - _DAY_MS:
            self.volume_total -= self.volume.popleft()[1]

    # ------------------------------------------------------------ snapshots

    def _stats_message(self) -> MarketStats:
        now_ms = self.clock.now_ms()
        self._prune_volume(now_ms)
        oi = self.book.open_interest
        price = self.price.price.value if self.price else None
        return MarketStats(
            price=price,
            long_open_interest=oi.long,
            short_open_interest=oi.short,
            open_interest_usd=oi.usd(price) if price is not None else None,
            skew=oi.skew,
            funding_rate=self.funding.rate_per_hour,
            predicted_funding_rate=self._model_rate(),
            funding_index=round_places(self.funding.index_at(now_ms), 18),
            open_positions=oi.open_positions,
            volume_24h_usd=self.volume_total,
            stale=self.is_stale(),
        )

    def _publish_stats(self) -> None:
        if self._stats is not None:
            self._stats.publish_snapshot(self._stats_message(), self.clock.now_ms())

    async def _publish_stats_periodically(self) -> None:
        while True:
            await trio.sleep(self.settings.market_stats_interval_ms / 1000)
            self._publish_stats()

    def _view_args(self) -> dict[str, object]:
        return {
            "price": self.price.price.value if self.price else None,
            "confidence": self.price.price.confidence if self.price else Decimal(0),
            "funding_index": self._funding_index_now(),
            "params": self.params,
            "stale": self.is_stale(),
        }

    def _user_views(self, address: str) -> tuple:  # type: ignore[type-arg]
        args = self._view_args()
        return tuple(position_view(p, **args) for p in self.book.of_account(address))  # type: ignore[arg-type]

    def _state(self, *, with_positions: bool) -> MarketState:
        positions: tuple = ()  # type: ignore[type-arg]
        if with_positions:
            args = self._view_args()
            positions = tuple((p.account, position_view(p, **args)) for p in self.book)  # type: ignore[arg-type]
        return MarketState(self.market_id, self._stats_message(), self._price_message(), positions)

    def _candidates(self, limit: int) -> MarketCandidates:
        """The ``limit`` lowest-health positions, with this market's totals."""
        if self.price is None or len(self.book) == 0:
            return MarketCandidates((), 0, 0)
        price, confidence = self.price.price.value, self.price.price.confidence
        index = self._funding_index_now()
        query = self.book.liquidation_index.query(price, confidence, index)
        stale = self.is_stale()
        candidates = []
        for position_id in query.lowest_health_first():
            if len(candidates) >= limit:
                break
            position = self.book.get(position_id)
            assert position is not None
            risk = position_risk(position, price, confidence, index, self.params)
            liquidatable = not stale and query.level_of(position_id) is RiskLevel.LIQUIDATABLE
            candidates.append(candidate_view(position, risk, liquidatable=liquidatable))
        return MarketCandidates(
            tuple(candidates),
            total_at_risk=query.count(RiskLevel.WARNING),
            total_liquidatable=0 if stale else query.count(RiskLevel.LIQUIDATABLE),
        )
