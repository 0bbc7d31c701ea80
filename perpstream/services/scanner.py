"""LiquidationScanner: the most-at-risk positions across every market.

Every ``liquidations_interval_ms`` it reads each market's lowest-health
positions through the query interface (each market answers from its
liquidation index, without a scan), merges them, and publishes one
``liquidation_alert``: the top candidates, lowest health first, with each
one's potential keeper reward. The markets themselves publish the
``liquidation_event`` messages on the same stream, in the tick that crossed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal

import trio

from actors import Actor, ActorContext
from perpstream.clock import WallClock
from perpstream.history import StreamHistory
from perpstream.protocol import Candidate, Channel, LiquidationAlert
from perpstream.services.messages import MarketCandidates
from perpstream.services.queries import MarketQueries, MarketUnavailable
from perpstream.services.topics import StreamPublisher
from perpstream.streams import StreamKey

__all__ = ["LiquidationScanner"]

log = logging.getLogger("perpstream.scanner")


def _rank(candidate: Candidate) -> tuple[int, Decimal, str]:
    # No health factor means no risk price (a long at P − σ ≤ 0): most at risk.
    if candidate.health_factor is None:
        return (0, Decimal(0), candidate.position_id)
    return (1, candidate.health_factor, candidate.position_id)


class LiquidationScanner(Actor):
    """Publishes the ``liquidations`` stream; registered as ``scanner``."""

    kind = "scanner"

    def __init__(
        self,
        *,
        markets: Sequence[str],
        interval_ms: int,
        limit: int,
        event_buffer: int,
        clock: WallClock,
        history: StreamHistory,
    ) -> None:
        self.history = history
        self.markets = tuple(markets)
        self.interval_ms = interval_ms
        self.limit = limit
        self.event_buffer = event_buffer
        self.clock = clock
        self.latest: LiquidationAlert | None = None
        self.scans = 0
        self._queries: MarketQueries | None = None
        self._topics: StreamPublisher | None = None

    async def setup(self, ctx: ActorContext) -> None:
        self._queries = MarketQueries.of(ctx.registry, self.clock.now_ms)
        self._topics = StreamPublisher.of(ctx, StreamKey(Channel.LIQUIDATIONS), self.event_buffer, self.history)
        await self.scan()
        ctx.nursery.start_soon(self._scan_periodically)

    def describe(self) -> dict[str, object]:
        latest = self.latest
        return {
            "scans": self.scans,
            "at_risk": latest.total_at_risk if latest else None,
            "liquidatable": latest.total_liquidatable if latest else None,
        }

    async def _scan_periodically(self) -> None:
        while True:
            await trio.sleep(self.interval_ms / 1000)
            await self.scan()

    def _ask(self, market_id: str) -> MarketCandidates | None:
        assert self._queries is not None
        try:
            return self._queries.candidates(market_id, self.limit)
        except MarketUnavailable:
            log.info("scanner: market %s is unavailable; left out of this alert", market_id)
            return None

    async def scan(self) -> None:
        """Merge every market's candidates and publish one alert."""
        answers = [a for a in [self._ask(m) for m in self.markets] if a is not None]
        candidates = sorted((c for a in answers for c in a.candidates), key=_rank)[: self.limit]
        alert = LiquidationAlert(
            candidates=tuple(candidates),
            total_at_risk=sum(a.total_at_risk for a in answers),
            total_liquidatable=sum(a.total_liquidatable for a in answers),
        )
        self.latest = alert
        self.scans += 1
        assert self._topics is not None
        self._topics.publish_snapshot(alert, self.clock.now_ms())
