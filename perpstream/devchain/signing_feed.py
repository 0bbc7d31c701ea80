"""The embedded chain's price publisher: a feed wrapper that signs every update.

On a real chain Hermes delivers each price with its signed ``binary.data``;
on the embedded chain nobody does, so :class:`SigningFeed` runs the
configured feed and attaches an update signed by the demo publisher for the
running chain's oracle (``PriceUpdate.update_data``). Downstream, a
``price_update`` then carries what a bot submits with its transaction, as
it would with Pyth. The newest signed update of every feed is kept in
:class:`SignedPrices` for the demo bots, which transact with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio
from eth_abi.exceptions import EncodingError

from perpstream.devchain.oracle_update import DemoPublisher, OracleDomain
from perpstream.domain.prices import PriceUpdate
from perpstream.feeds.feed import FeedStatus, OnUpdate, PriceFeed

__all__ = ["SignedPrices", "SigningFeed"]

log = logging.getLogger(__name__)


class SignedPrices:
    """The newest signed update of each feed, by oracle time."""

    def __init__(self) -> None:
        self._newest: dict[str, PriceUpdate] = {}

    def offer(self, update: PriceUpdate) -> None:
        """Keep ``update`` if it is signed and newer than the one held for its feed."""
        if not update.update_data:
            return
        held = self._newest.get(update.feed_id)
        if held is None or update.order > held.order:
            self._newest[update.feed_id] = update

    def newest(self, feed_id: str) -> PriceUpdate | None:
        return self._newest.get(feed_id)


class SigningFeed:
    """A ``PriceFeed`` that signs the wrapped feed's updates for the demo oracle.

    ``domain`` names the oracle to sign for, or None while no chain runs:
    updates then pass unsigned. The signed update replaces any update data
    the wrapped feed brought (Hermes's, which the demo oracle cannot verify).
    Signing takes about 2 ms of CPU per update. An update that cannot be signed (a price
    outside the oracle's int64 / uint64 fields) passes unsigned and is logged;
    it never stops the feed.
    """

    def __init__(
        self,
        inner: PriceFeed,
        domain: Callable[[], OracleDomain | None],
        *,
        publisher: DemoPublisher | None = None,
        signed: SignedPrices | None = None,
    ) -> None:
        self._inner = inner
        self._domain = domain
        self._publisher = publisher or DemoPublisher()
        self.signed = signed if signed is not None else SignedPrices()
        self.source = inner.source

    @property
    def inner(self) -> PriceFeed:
        """The feed whose prices are signed (e.g. to pause a simulated one)."""
        return self._inner

    async def run(self, on_update: OnUpdate, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def sign_and_forward(update: PriceUpdate) -> None:
            await on_update(self.sign(update))

        await self._inner.run(sign_and_forward, task_status=task_status)

    def sign(self, update: PriceUpdate) -> PriceUpdate:
        """``update`` with the demo publisher's signed update attached (and remembered)."""
        domain = self._domain()
        if domain is None:
            return update
        try:
            data = self._publisher.sign(domain, update.feed_id, update.price)
        except (OverflowError, EncodingError) as exc:
            log.warning("price of feed %s not signed for the demo oracle: %s", update.feed_id, exc)
            return update
        signed = attrs.evolve(update, update_data=(data,))
        self.signed.offer(signed)
        return signed

    def status(self) -> FeedStatus:
        return self._inner.status()
