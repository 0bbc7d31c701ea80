"""The list of every open position across the bus: the core publishes it, edges page through it.

Every ``interval_s`` the active core writes each running market's open
positions, priced then, to ``{p}:open:{market}`` as one JSON value that
expires after ``ttl_s``. An edge's ``/api/v1/positions`` reads every
market's value in one ``MGET`` and pages through them with the single
process's rule. A market whose value is missing — restarting, or no core
active for longer than the TTL — is answered with a 503 naming it, never
with an old list presented as current; the body's ``ts`` says how old the
rows are (the oldest market's publication).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import trio

from actors import Actor, ActorContext
from perpstream.bus._keys import BusKeys
from perpstream.bus._redis import REDIS_DOWN, RedisLink
from perpstream.services.open_positions import OpenPositions, OpenPositionsUnavailable, Row, market_rows
from perpstream.services.queries import MarketQueries, MarketUnavailable

__all__ = ["EdgeOpenPositions", "OpenPositionsPublisher"]

log = logging.getLogger("perpstream.bus")


class OpenPositionsPublisher(Actor):
    """On the active core: every market's open positions into Redis, every ``interval_s``."""

    kind = "open-positions"

    def __init__(self, link: RedisLink, keys: BusKeys, market_ids: list[str], *, now_ms: Callable[[], int],
                 interval_s: float, ttl_s: float) -> None:
        self.link = link
        self.keys = keys
        self.market_ids = market_ids
        self.now_ms = now_ms
        self.interval_s = interval_s
        self.ttl_ms = int(ttl_s * 1000)
        self.published = 0
        self.positions = 0

    async def setup(self, ctx: ActorContext) -> None:
        ctx.nursery.start_soon(self._publish_every_interval, MarketQueries.of(ctx.registry, self.now_ms))

    def describe(self) -> dict[str, object]:
        return {"published": self.published, "positions": self.positions}

    async def _publish_every_interval(self, queries: MarketQueries) -> None:
        while True:
            await self.publish(queries)
            await trio.sleep(self.interval_s)

    async def publish(self, queries: MarketQueries) -> None:
        """Write every running market's rows (a market restarting keeps its last value until it expires)."""
        values: dict[str, str] = {}
        count = 0
        for market_id in self.market_ids:
            try:
                rows = market_rows(queries, market_id)
            except MarketUnavailable:
                continue
            count += len(rows)
            values[market_id] = json.dumps({"ts": self.now_ms(), "rows": rows}, separators=(",", ":"))
        try:
            async with self.link.client.pipeline(transaction=False) as pipe:
                for market_id, value in values.items():
                    pipe.set(self.keys.open_positions(market_id), value, px=self.ttl_ms)
        except REDIS_DOWN as exc:
            self.link.went_down(exc)
            return
        self.published += 1
        self.positions = count


class EdgeOpenPositions:
    """On an edge: the list as the core last published it (an :data:`OpenPositionsSource`)."""

    def __init__(self, link: RedisLink, keys: BusKeys, market_ids: list[str]) -> None:
        self.link = link
        self.keys = keys
        self.market_ids = market_ids

    async def __call__(self) -> OpenPositions:
        try:
            values = await self.link.client.mget([self.keys.open_positions(m) for m in self.market_ids])
        except REDIS_DOWN as exc:
            self.link.went_down(exc)
            raise OpenPositionsUnavailable("unavailable", f"Redis at {self.link.where} is unreachable") from exc
        rows: list[Row] = []
        oldest: int | None = None
        for market_id, value in zip(self.market_ids, values, strict=True):
            if value is None:
                raise OpenPositionsUnavailable(
                    "market_unavailable", f"market {market_id} is unavailable: no active core has published its "
                    "positions lately")
            published = json.loads(value)
            rows.extend(published["rows"])
            oldest = published["ts"] if oldest is None else min(oldest, published["ts"])
        return OpenPositions.of_rows(rows, oldest or 0)
