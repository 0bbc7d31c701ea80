"""One market's state as a pure, synchronous machine: inputs in, effects out.

:class:`MarketCore` holds a market's positions (with their last chain event
and finality), open interest, funding, 24 h volume, newest oracle price and
risk episodes. Its inputs are a price (:meth:`on_price`), a chain delivery
(:meth:`on_delivery`) and the passing of time (every method takes
``now_ms``); each returns :class:`Effects`, what the caller must publish and
to whom. It never reads a clock, sends a message or touches trio, so it is
tested directly; :class:`~perpstream.services.market.MarketActor` is the thin
shell that feeds it and publishes its effects, and the query interface
(:mod:`~perpstream.services.queries`) reads its views.

Chain deliveries are applied by identity: each carries its outbox ``seq``,
and a core rebuilt from a snapshot applies exactly those after the
snapshot's ``delivered_through``, whatever their block heights, and each
once (a redelivery has the seq it had). Whether a delivery's messages were
published is the stream history's to say (the caller passes ``told``): a
delivery the state has may still be news to clients, and one it lacks may
not be (another core published it).

Risk follows the contract (:mod:`~perpstream.domain.contract_risk`): at the
newest oracle price, with the funding index as last posted on chain. The
liquidation index finds the positions below the warning level in
``O(log n + k)``; the contract's integer arithmetic decides each one's level.
Nothing risk-related is raised on a stale price.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal

import attrs

from perpstream.chain.events import (
    EventMeta,
    FundingUpdated,
    IndexedEvent,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    StoredFunding,
    StoredPosition,
)
from perpstream.chain.store import StoreSnapshot
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
from perpstream.domain.contract_risk import ContractRisk, contract_risk
from perpstream.domain.episodes import WarningEpisodes
from perpstream.protocol import (
    Candidate,
    EventRef,
    FundingRateUpdate,
    LiquidationEvent,
    LiquidationWarning,
    MarketStats,
    Message,
    PositionView,
)
from perpstream.protocol import PriceUpdate as PriceMessage
from perpstream.services import user_events
from perpstream.services.views import (
    Settlement,
    candidate_view,
    health_places,
    position_from_stored,
    position_view,
    round_places,
    update_data_hex,
)
from perpstream.services.messages import MarketCandidates

__all__ = ["Effects", "MarketCore", "MarketSettings", "is_newer"]

_DAY_MS = 24 * 3600 * 1000


@attrs.frozen
class MarketSettings:
    """The cadences and thresholds a market runs with."""

    prices_interval_ms: int = 1000
    market_stats_interval_ms: int = 5000
    stale_after_ms: int = 10_000
    event_buffer: int = 256
    #: A warned position is warned again at the same or a milder level only
    #: after its health has been back at ``1.2 + warning_rearm_margin``.
    warning_rearm_margin: Decimal = Decimal("0.05")


@attrs.define
class Effects:
    """What one input asks the caller to do."""

    #: A newer price was accepted: publish ``price_update`` (throttled).
    price_changed: bool = False
    #: Publish a ``market_stats`` snapshot now (the market's first price).
    stats_changed: bool = False
    #: Events for the market-stats stream (``funding_rate_update``).
    stats_events: list[Message] = attrs.field(factory=list)
    #: (account, message) for the account's positions stream.
    user_events: list[tuple[str, Message]] = attrs.field(factory=list)
    #: Events for the market-wide liquidations stream.
    liquidation_events: list[LiquidationEvent] = attrs.field(factory=list)
    #: Why an input was refused (for the log), None when it was not.
    refused: str | None = None


def is_newer(update: PriceUpdate, current: PriceUpdate) -> bool:
    """Whether ``update`` supersedes ``current``: a later ``(publish_time, slot)``.

    Several prices share one whole-second ``publish_time``; the slot orders
    them. A price without a slot cannot be placed within its second, so it
    is taken unless it repeats ``current`` exactly.
    """
    if update.publish_time != current.publish_time:
        return update.publish_time > current.publish_time
    if update.slot is not None and current.slot is not None:
        return update.slot > current.slot
    return update != current


class MarketCore:
    """The whole state of one market; see the module docstring."""

    def __init__(self, params: MarketParams, settings: MarketSettings, now_ms: int) -> None:
        self.market_id = params.market_id
        self.params = params
        self.settings = settings
        self.book = PositionBook(params)
        self.settlement: dict[str, Settlement] = {}
        self.funding = FundingState.start(now_ms, rate_per_hour=self._model_rate())
        self.chain_funding: StoredFunding | None = None
        self.price: PriceUpdate | None = None
        self.delivered_through = 0
        self.episodes = WarningEpisodes(settings.warning_rearm_margin)
        self.liquidatable: set[str] = set()
        self.volume: deque[tuple[int, Decimal]] = deque()
        self.volume_total = Decimal(0)
        self.ticks = 0
        self.warnings = 0
        self._stale_announced = False

    @classmethod
    def rebuilt(cls, params: MarketParams, settings: MarketSettings, snapshot: StoreSnapshot,
                now_ms: int) -> MarketCore:
        """The market as a store snapshot has it; deliveries after it follow."""
        core = cls(params, settings, now_ms)
        core.delivered_through = snapshot.delivered_through
        for stored in snapshot.positions:
            if stored.market_id == core.market_id:
                core.book.open(position_from_stored(stored))
                core.settlement[stored.position_id] = (stored.last_event, stored.finality)
        core.funding = FundingState.start(now_ms, rate_per_hour=core._model_rate())
        for stored_funding in snapshot.funding:
            if stored_funding.market_id == core.market_id:
                core._set_chain_funding(stored_funding)
        return core

    # ------------------------------------------------------------ prices

    def is_stale(self, now_ms: int) -> bool:
        """No price yet, or the newest is older than ``stale_after_ms`` by publish time."""
        return self.price is None or self.age_ms(now_ms) > self.settings.stale_after_ms

    def age_ms(self, now_ms: int) -> int:
        """How old the newest price is now (0 without one)."""
        return 0 if self.price is None else max(0, now_ms - self.price.publish_time * 1000)

    def on_price(self, update: PriceUpdate, now_ms: int) -> Effects:
        """A price from the oracle; anything not newer (:func:`is_newer`) is dropped."""
        effects = Effects()
        if update.price.price <= 0:
            effects.refused = f"non-positive oracle price {update.price.value} at {update.publish_time}"
            return effects  # no price, no margin: the contract would refuse it too
        if self.price is not None and not is_newer(update, self.price):
            return effects  # the feed filters these too; a restart may replay one
        first = self.price is None
        self.ticks += 1
        self.price = update
        self._stale_announced = False
        self.funding = self.funding.advanced(now_ms, price=update.price.value, model_rate=self._model_rate())
        effects.price_changed = True
        effects.stats_changed = first
        if not self.is_stale(now_ms):
            self._assess_risk(effects, now_ms)
        return effects

    def went_stale(self, now_ms: int) -> bool:
        """True once per stale spell, the first time it is asked while stale (for the log)."""
        if self.price is None or self._stale_announced or not self.is_stale(now_ms):
            return False
        self._stale_announced = True
        return True

    def price_message(self, now_ms: int) -> PriceMessage | None:
        """The newest price with its age now (so a stale price says how stale)."""
        if self.price is None:
            return None
        return PriceMessage(
            price=self.price.price.value,
            confidence=self.price.price.confidence,
            ema_price=self.price.ema_price.value,
            publish_time=self.price.publish_time,
            age_ms=self.age_ms(now_ms),
            stale=self.is_stale(now_ms),
            source=self.price.source,
            update_data=update_data_hex(self.price),
        )

    # ------------------------------------------------------------ risk

    @property
    def chain_funding_index(self) -> Decimal:
        """The funding index the contract holds: as last posted (0 before any post)."""
        return self.chain_funding.funding_index if self.chain_funding is not None else Decimal(0)

    def _open_position(self, position_id: str) -> Position:
        position = self.book.get(position_id)
        assert position is not None, position_id
        return position

    def verdict(self, position: Position) -> ContractRisk:
        assert self.price is not None
        return contract_risk(position, self.price.price, self.chain_funding_index, self.params)

    def _assess_risk(self, effects: Effects, now_ms: int) -> None:
        """Warn on worsening levels, announce liquidatable / recovered positions."""
        assert self.price is not None
        query = self.book.liquidation_index.query(self.price.price.value, Decimal(0), self.chain_funding_index)
        looked_at = set(query.crossed(RiskLevel.WARNING))
        looked_at.update(self.episodes.tracked())
        looked_at.update(self.liquidatable)
        for position_id in sorted(looked_at):
            position = self.book.get(position_id)
            if position is None:
                continue
            verdict = self.verdict(position)
            warn = self.episodes.observe(position_id, verdict.level, verdict.health_factor)
            if warn is not None:
                self._warn(effects, position, verdict, warn, now_ms)
            if verdict.liquidatable and position_id not in self.liquidatable:
                self.liquidatable.add(position_id)
                effects.liquidation_events.append(self._liquidation_event("liquidatable", position, verdict))
            elif not verdict.liquidatable and position_id in self.liquidatable:
                self.liquidatable.discard(position_id)
                effects.liquidation_events.append(self._liquidation_event("recovered", position, verdict))

    def _warn(self, effects: Effects, position: Position, verdict: ContractRisk, level: RiskLevel,
              now_ms: int) -> None:
        assert self.price is not None
        conservative = position_risk(position, self.price.price.value, self.price.price.confidence,
                                     self.funding_index(now_ms), self.params)
        self.warnings += 1
        effects.user_events.append((position.account, LiquidationWarning(
            position_id=position.position_id,
            market_id=self.market_id,
            health_factor=health_places(verdict.health_factor) or Decimal(0),
            liquidation_price=round_places(verdict.liquidation_price, 8),  # type: ignore[arg-type]
            mark_price=verdict.mark_price,
            severity=level.value,
            health_factor_conservative=round_places(conservative.health_factor, 6),
            liquidatable=verdict.liquidatable,
            update_data=update_data_hex(self.price),
        )))

    def _liquidation_event(self, kind: str, position: Position, verdict: ContractRisk | None, *,
                           event: EventMeta | None = None, liquidator: str | None = None) -> LiquidationEvent:
        price = self.price
        if event is not None:
            event_id = f"{kind}:{position.position_id}:{event.tx_hash}:{event.log_index}"
        else:
            assert price is not None
            publish_time, slot = price.order
            event_id = f"{kind}:{position.position_id}:{publish_time}:{slot}"
        return LiquidationEvent(
            id=event_id,
            kind=kind,
            user_address=position.account,
            market_id=self.market_id,
            position_id=position.position_id,
            side=position.side.value,
            size=position.size,
            equity=verdict.equity if verdict else None,
            maintenance_margin=verdict.maintenance_margin if verdict else None,
            shortfall=verdict.shortfall if verdict else None,
            health_factor=health_places(verdict.health_factor) if verdict else None,
            mark_price=verdict.mark_price if verdict else None,
            potential_reward=verdict.potential_reward if verdict else None,
            publish_time=price.publish_time if price else None,
            update_data=update_data_hex(price),
            event=None if event is None else EventRef(
                block_number=event.block_number, block_hash=event.block_hash,
                tx_hash=event.tx_hash, log_index=event.log_index),
            liquidator=liquidator,
        )

    # ------------------------------------------------------------ chain deliveries

    def on_delivery(self, indexed: IndexedEvent, now_ms: int, *, told: bool = False) -> Effects:
        """Apply one delivery unless the state already reflects it (by ``seq``).

        ``told``: its messages were published already; the state takes it
        (if it lacks it) and nobody is told again. Untold, a delivery the
        state reflects (the daemon stopped between storing and publishing
        it) has its messages published, without being applied again. A
        delivery without a seq (0) cannot be placed in the outbox order and
        is applied as it comes.
        """
        effects = Effects()
        if indexed.seq:
            if indexed.seq <= self.delivered_through:
                if not told:
                    self._republish(effects, indexed)
                return effects  # in the snapshot already, or delivered before
            self.delivered_through = indexed.seq
        self._take(effects, indexed, now_ms)
        if told:  # what it changed was published then, by whoever published it
            effects.user_events.clear()
            effects.liquidation_events.clear()
            effects.stats_events.clear()
        return effects

    def _take(self, effects: Effects, indexed: IndexedEvent, now_ms: int) -> None:
        """Apply a new delivery, with its messages."""
        event = indexed.event
        if isinstance(event, FundingUpdated):
            if event.market_id == self.market_id:
                self._on_funding_event(effects, indexed, event, now_ms)
            return
        if not self._concerns_me(indexed):
            return
        position_id = event.position_id
        before = self._described_before(indexed)
        if indexed.finality == "pending":
            self._apply(effects, indexed, now_ms)
        elif indexed.finality == "final":
            if self.settlement.get(position_id, (None, None))[0] == event.meta:
                self.settlement[position_id] = (event.meta, "final")
        else:
            restored = indexed.restored
            if restored is None or isinstance(restored, StoredPosition):
                self._set_position(effects, position_id, None if restored is None else position_from_stored(restored),
                                   now_ms)
                if isinstance(restored, StoredPosition):
                    self.settlement[position_id] = (restored.last_event, restored.finality)
        account = self._account_of(indexed, before)
        if account is not None:
            effects.user_events.append((account, user_events.position_event(indexed, self.book.get(position_id) or before)))

    def _republish(self, effects: Effects, indexed: IndexedEvent) -> None:
        """The messages of a delivery the state already reflects but nobody was told of."""
        event = indexed.event
        if isinstance(event, FundingUpdated) or not self._concerns_me(indexed):
            return
        before = self._described_before(indexed)
        account = self._account_of(indexed, before)
        if account is None:
            return
        effects.user_events.append((account, user_events.position_event(indexed, self.book.get(event.position_id) or before)))
        if isinstance(event, PositionLiquidated) and indexed.finality == "pending" and before is not None:
            effects.liquidation_events.append(self._liquidation_event(
                "liquidated", before, None, event=event.meta, liquidator=event.liquidator))

    def _concerns_me(self, indexed: IndexedEvent) -> bool:
        """Whether a position delivery is this market's (modifications name no market)."""
        event = indexed.event
        for source in (event, indexed.before, indexed.restored):
            market_id = getattr(source, "market_id", None)
            if market_id is not None:
                return market_id == self.market_id
        return event.position_id in self.book  # type: ignore[union-attr,operator]

    def _described_before(self, indexed: IndexedEvent) -> Position | None:
        """The position as it was just before the event: the book's, else the delivery's own record."""
        position = self.book.get(indexed.event.position_id)  # type: ignore[union-attr]
        if position is not None and indexed.finality == "pending":
            return position
        if isinstance(indexed.before, StoredPosition):
            return position_from_stored(indexed.before)
        if isinstance(indexed.restored, StoredPosition):
            return position_from_stored(indexed.restored)
        return position

    def _account_of(self, indexed: IndexedEvent, before: Position | None) -> str | None:
        account = getattr(indexed.event, "account", None)
        if account is None and before is not None:
            account = before.account
        return account

    def _apply(self, effects: Effects, indexed: IndexedEvent, now_ms: int) -> None:
        event = indexed.event
        assert not isinstance(event, FundingUpdated)
        if isinstance(event, PositionOpened):
            position = Position(
                position_id=event.position_id, account=event.account, market_id=self.market_id,
                side=Side.from_is_long(event.is_long), size=event.size, collateral=event.collateral,
                entry_price=event.entry_price, entry_funding_index=event.entry_funding_index,
            )
            self._set_position(effects, event.position_id, position, now_ms)
            self.settlement[event.position_id] = (event.meta, "pending")
            self._add_volume(now_ms, event.size * event.entry_price)
        elif isinstance(event, PositionModified):
            before = self.book.get(event.position_id)
            if before is None and isinstance(indexed.before, StoredPosition):
                before = position_from_stored(indexed.before)
            if before is None:
                return
            after = attrs.evolve(before, size=event.size, collateral=event.collateral,
                                 entry_price=event.entry_price, entry_funding_index=event.entry_funding_index)
            self._set_position(effects, event.position_id, after, now_ms)
            self.settlement[event.position_id] = (event.meta, "pending")
            self._add_volume(now_ms, abs(event.size - before.size) * event.entry_price)
        else:
            before = self.book.get(event.position_id)
            if before is None and isinstance(indexed.before, StoredPosition):
                before = position_from_stored(indexed.before)
            was_liquidatable = event.position_id in self.liquidatable
            verdict = self.verdict(before) if before is not None and self.price is not None else None
            self._set_position(effects, event.position_id, None, now_ms)
            if before is None:
                return
            if isinstance(event, PositionLiquidated):
                effects.liquidation_events.append(self._liquidation_event(
                    "liquidated", before, verdict, event=event.meta, liquidator=event.liquidator))
                self._add_volume(now_ms, before.size * event.price)
            else:
                if was_liquidatable:
                    effects.liquidation_events.append(self._liquidation_event(
                        "closed", before, verdict, event=event.meta))
                self._add_volume(now_ms, before.size * event.exit_price)

    def _set_position(self, effects: Effects, position_id: str, position: Position | None, now_ms: int) -> None:
        """Set-semantics: make the book hold exactly ``position`` (None: gone)."""
        skew_before = self.book.open_interest.skew
        if position is None:
            if position_id in self.book:
                self.book.close(position_id)
            self.settlement.pop(position_id, None)
            self.episodes.forget(position_id)
            self.liquidatable.discard(position_id)
        elif position_id in self.book:
            self.book.modify(position)
        else:
            self.book.open(position)
        if self.book.open_interest.skew != skew_before:
            previous = self.funding.rate_per_hour
            self.funding = self.funding.advanced(now_ms, model_rate=self._model_rate())
            if self.funding.rate_per_hour != previous:
                effects.stats_events.append(self._funding_message(previous, "model", now_ms))

    # ------------------------------------------------------------ funding

    def funding_index(self, now_ms: int) -> Decimal:
        """The funding index accrued to ``now_ms`` (what PnL and equity use)."""
        return self.funding.index_at(now_ms)

    def _model_rate(self) -> Decimal:
        return model_funding_rate(self.book.open_interest.skew, self.params)

    def _on_funding_event(self, effects: Effects, indexed: IndexedEvent, event: FundingUpdated, now_ms: int) -> None:
        if indexed.finality == "final":
            return
        previous = self.funding.rate_per_hour
        if indexed.finality == "pending":
            self._set_chain_funding(StoredFunding(self.market_id, event.funding_rate_per_hour, event.funding_index,
                                                  event.timestamp, event.meta.block_number))
        elif isinstance(indexed.restored, StoredFunding):
            self._set_chain_funding(indexed.restored)
        else:
            # The only chain funding update was undone: the model drives again.
            self.chain_funding = None
            self.funding = FundingState.start(
                now_ms, index=self.funding_index(now_ms), rate_per_hour=self._model_rate()
            ).advanced(now_ms, price=self.price.price.value if self.price else None)
        if self.funding.rate_per_hour != previous:
            effects.stats_events.append(self._funding_message(previous, self.funding.source.value, now_ms))

    def _set_chain_funding(self, stored: StoredFunding) -> None:
        self.chain_funding = stored
        self.funding = self.funding.with_chain_update(
            rate_per_hour=stored.rate_per_hour, index=stored.funding_index, timestamp_ms=stored.timestamp * 1000
        )

    def _funding_message(self, previous: Decimal, source: str, now_ms: int) -> FundingRateUpdate:
        return FundingRateUpdate(
            funding_rate=self.funding.rate_per_hour,
            previous_funding_rate=previous,
            funding_index=round_places(self.funding_index(now_ms), 18),  # type: ignore[arg-type]
            source=source,
        )

    # ------------------------------------------------------------ volume

    def _add_volume(self, now_ms: int, usd: Decimal) -> None:
        self.volume.append((now_ms, usd))
        self.volume_total += usd
        self._prune_volume(now_ms)

    def _prune_volume(self, now_ms: int) -> None:
        while self.volume and self.volume[0][0] <= now_ms - _DAY_MS:
            self.volume_total -= self.volume.popleft()[1]

    # ------------------------------------------------------------ views

    def stats_message(self, now_ms: int) -> MarketStats:
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
            funding_index=round_places(self.funding_index(now_ms), 18),  # type: ignore[arg-type]
            open_positions=oi.open_positions,
            volume_24h_usd=self.volume_total,
            stale=self.is_stale(now_ms),
        )

    def _view(self, position: Position, now_ms: int) -> PositionView:
        return position_view(
            position, update=self.price, funding_index=self.funding_index(now_ms),
            chain_funding_index=self.chain_funding_index, params=self.params, stale=self.is_stale(now_ms),
            settlement=self.settlement.get(position.position_id, (None, None)),
        )

    def positions_of(self, address: str, now_ms: int) -> tuple[PositionView, ...]:
        """The account's positions in this market, priced now."""
        return tuple(self._view(p, now_ms) for p in self.book.of_account(address))

    def positions(self, now_ms: int) -> tuple[tuple[str, PositionView], ...]:
        """Every open position as (account, view)."""
        return tuple((p.account, self._view(p, now_ms)) for p in self.book)

    def candidates(self, limit: int, now_ms: int) -> MarketCandidates:
        """The ``limit`` lowest-health positions (the contract's health at P), with the totals."""
        if self.price is None or len(self.book) == 0:
            return MarketCandidates((), 0, 0)
        update = self.price
        query = self.book.liquidation_index.query(update.price.value, Decimal(0), self.chain_funding_index)
        stale = self.is_stale(now_ms)
        accrued = self.funding_index(now_ms)
        chosen: list[Candidate] = []
        for position_id in query.lowest_health_first():
            if len(chosen) >= limit:
                break
            position = self.book.get(position_id)
            assert position is not None
            conservative = position_risk(position, update.price.value, update.price.confidence, accrued, self.params)
            chosen.append(candidate_view(position, self.verdict(position), conservative, stale=stale, update=update))
        at_risk = list(query.crossed(RiskLevel.WARNING))
        liquidatable = 0 if stale else sum(
            1 for pid in at_risk if self.verdict(self._open_position(pid)).liquidatable)
        return MarketCandidates(tuple(chosen), total_at_risk=len(at_risk), total_liquidatable=liquidatable)

    def describe(self, now_ms: int) -> dict[str, object]:
        return {
            "market_id": self.market_id,
            "open_positions": len(self.book),
            "at_risk": len(self.episodes),
            "liquidatable": len(self.liquidatable),
            "price_publish_time": self.price.publish_time if self.price else None,
            "stale": self.is_stale(now_ms),
            "delivered_through": self.delivered_through,
            "ticks": self.ticks,
            "warnings": self.warnings,
        }

