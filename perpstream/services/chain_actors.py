"""The chain subtree's indexer actor.

The indexer is the same against a real node and the embedded chain; only
its :class:`~perpstream.chain.ChainClient` differs. The embedded chain and
its demo bots are in :mod:`perpstream.services.demo_actors`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from actors import Actor, ActorContext
from perpstream.chain import ChainClient, IndexedEvent, Indexer
from perpstream.chain.indexer import IndexerStatus
from perpstream.chain.store import IndexerStore
from perpstream.services.messages import ChainDelivery
from perpstream.services.topics import market_name

__all__ = ["IndexerActor"]

log = logging.getLogger("perpstream.chain")


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
    #: How long a market may take to apply one delivery before the indexer
    #: gives up on this round (it retries from the outbox).
    DELIVERY_TIMEOUT_S = 30.0

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
            # Waiting until each market has applied it is deliberate: the
            # indexer reads no further than the markets can apply, and
            # forgets a delivery (acknowledges its outbox entry) only once
            # its messages are in the stream history.
            for market_id in _route(indexed, self._markets):
                await refs[market_id].request(lambda reply: ChainDelivery(indexed, reply),
                                              timeout=self.DELIVERY_TIMEOUT_S)

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
