"""PriceFeedActor: runs the configured price source and routes its prices.

Each update goes to the market whose Pyth feed id it carries, with a
non-blocking send: a market that is restarting or far behind must not stall
the others' prices. Prices are snapshots, so a dropped tick is replaced by
the next one (at Pyth's cadence, within a second); drops are counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from actors import Actor, ActorContext, ActorNotFound, MailboxFull
from perpstream.domain import PriceUpdate
from perpstream.feeds import PriceFeed
from perpstream.services.messages import PriceTick
from perpstream.services.topics import market_name

__all__ = ["PriceFeedActor"]

log = logging.getLogger("perpstream.feed")


class PriceFeedActor(Actor):
    """Registered as ``feed``; the source runs in the actor's nursery."""

    kind = "feed"

    def __init__(self, feed: PriceFeed, *, markets_by_feed_id: Mapping[str, str]) -> None:
        self.feed = feed
        self.routes = dict(markets_by_feed_id)
        self.delivered = 0
        self.dropped = 0
        self.latest: dict[str, PriceUpdate] = {}

    async def setup(self, ctx: ActorContext) -> None:
        refs = {feed_id: ctx.registry.ref(market_name(m)) for feed_id, m in self.routes.items()}

        async def route(update: PriceUpdate) -> None:
            ref = refs.get(update.feed_id)
            if ref is None:
                return
            self.latest[update.feed_id] = update
            try:
                ref.send_nowait(PriceTick(update))
                self.delivered += 1
            except (MailboxFull, ActorNotFound):
                self.dropped += 1

        # Not ``nursery.start``: a real feed that cannot connect must not hold
        # up the rest of the tree; markets show no (or stale) prices meanwhile
        # and /readyz says why.
        ctx.nursery.start_soon(self.feed.run, route)

    def describe(self) -> dict[str, object]:
        status = self.feed.status()
        return {
            "source": status.source,
            "connected": status.connected,
            "reconnects": status.reconnects,
            "last_error": status.last_error,
            "missing_feeds": list(status.missing_feeds),
            "delivered": self.delivered,
            "dropped": self.dropped,
        }
