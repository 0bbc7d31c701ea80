"""The query interface: typed reads of the markets' live state, without messages.

REST, readiness, the liquidation scanner and the demo bots need values
(a price, an account's positions, the riskiest positions), not wire JSON.
Every market's actor registers its :class:`~perpstream.services.market_core.MarketCore`
here while it runs and withdraws it when it stops or fails, so a reader sees
a market's current state or learns that it is unavailable right now, never
a failed incarnation's half-updated state. Everything runs on the trio
thread, so a read is a consistent snapshot of the market at that instant.

One :class:`MarketQueries` exists per actor registry (``MarketQueries.of``),
the way topics do.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from decimal import Decimal

import trio

from actors import Policy, Topic
from perpstream.domain import PriceUpdate
from perpstream.protocol import LiquidationEvent, MarketStats, PositionView
from perpstream.protocol import PriceUpdate as PriceMessage
from perpstream.services.market_core import MarketCore
from perpstream.services.messages import MarketCandidates

__all__ = ["RESTART_WAIT_S", "MarketQueries", "MarketUnavailable"]


class MarketUnavailable(LookupError):
    """The market's actor is not running right now (restarting, or unknown)."""


#: How long a REST read waits for a restarting market before it answers 503.
RESTART_WAIT_S = 2.0

#: Typed liquidation events queued per subscriber before it is cut off.
LIQUIDATION_EVENT_BUFFER = 1024

_by_registry: weakref.WeakKeyDictionary[object, MarketQueries] = weakref.WeakKeyDictionary()


class MarketQueries:
    """Read-only access to every running market's state."""

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self._cores: dict[str, MarketCore] = {}
        self._registered = trio.Event()  # set (and replaced) whenever a market registers
        #: Every market's liquidation events (``LiquidationEvent``) as typed values, in the tick
        #: they happen, for in-process bots. Queued: a subscriber that falls
        #: ``LIQUIDATION_EVENT_BUFFER`` behind is closed, never skipped silently.
        self.liquidation_events: Topic[LiquidationEvent] = Topic(
            "queries/liquidation-events", policy=Policy.QUEUE, capacity=LIQUIDATION_EVENT_BUFFER)

    @classmethod
    def of(cls, registry: object, now_ms: Callable[[], int]) -> MarketQueries:
        """The queries of one actor system (created on first use, with that caller's clock)."""
        queries = _by_registry.get(registry)
        if queries is None:
            queries = _by_registry[registry] = cls(now_ms)
        return queries

    # ------------------------------------------------------------ the markets' side

    def register(self, core: MarketCore) -> None:
        self._cores[core.market_id] = core
        self._registered.set()
        self._registered = trio.Event()

    def withdraw(self, core: MarketCore) -> None:
        """Forget ``core`` unless a newer incarnation has replaced it already."""
        if self._cores.get(core.market_id) is core:
            del self._cores[core.market_id]

    # ------------------------------------------------------------ readers

    def _core(self, market_id: str) -> MarketCore:
        core = self._cores.get(market_id)
        if core is None:
            raise MarketUnavailable(market_id)
        return core

    def available(self, market_id: str) -> bool:
        return market_id in self._cores

    async def wait_available(self, market_ids: Iterable[str], timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every market to be running (a restart takes a moment)."""
        wanted = tuple(market_ids)
        with trio.move_on_after(timeout_s):
            while not all(self.available(m) for m in wanted):
                await self._registered.wait()
        return all(self.available(m) for m in wanted)

    def oracle_price(self, market_id: str) -> PriceUpdate | None:
        """The newest oracle price, as the feed delivered it (None before the first)."""
        return self._core(market_id).price

    def price(self, market_id: str) -> Decimal | None:
        """The newest price as an exact decimal, if any and not stale."""
        core = self._core(market_id)
        if core.price is None or core.is_stale(self._now_ms()):
            return None
        return core.price.price.value

    def price_message(self, market_id: str) -> PriceMessage | None:
        """``price_update`` as it would be sent now (its age computed now)."""
        return self._core(market_id).price_message(self._now_ms())

    def stats(self, market_id: str) -> MarketStats:
        return self._core(market_id).stats_message(self._now_ms())

    def predicted_funding_rate(self, market_id: str) -> Decimal:
        return self._core(market_id).stats_message(self._now_ms()).predicted_funding_rate

    def positions_of(self, address: str, market_id: str) -> tuple[PositionView, ...]:
        """An account's positions in one market, priced now (EIP-55 address)."""
        return self._core(market_id).positions_of(address, self._now_ms())

    def positions(self, market_id: str) -> tuple[tuple[str, PositionView], ...]:
        """Every open position of one market as (account, view)."""
        return self._core(market_id).positions(self._now_ms())

    def candidates(self, market_id: str, limit: int) -> MarketCandidates:
        """One market's ``limit`` lowest-health positions and its totals."""
        return self._core(market_id).candidates(limit, self._now_ms())

    def is_liquidatable(self, market_id: str, position_id: str) -> bool:
        """The contract's verdict on one position at the newest fresh price."""
        core = self._core(market_id)
        position = core.book.get(position_id)
        if position is None or core.is_stale(self._now_ms()):
            return False
        return core.verdict(position).liquidatable
