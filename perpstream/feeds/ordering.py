"""Dropping repeated and out-of-order oracle updates.

Hermes repeats itself: every stream event carries every requested feed as of
that slot, so a feed that did not tick is sent again unchanged, and the gap
fill after a reconnect overlaps what the stream then delivers. Downstream
wants each feed's prices once and moving forward in oracle time.

Oracle time is ``(publish_time, slot)``, not ``publish_time`` alone:
``publish_time`` has whole-second resolution and a slot lasts about 400 ms,
so two or three different prices of one feed share a second and only the
slot tells which is newer. An update passes if it is newer than the feed's
newest so far and is not an exact repeat of it (the same price and EMA
price, re-sent at a later slot because the feed did not change).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from perpstream.domain.prices import PriceUpdate

__all__ = ["OracleOrderFilter"]


class OracleOrderFilter:
    """Passes an update only if it is a new price, newer than any passed for its feed."""

    def __init__(self) -> None:
        self._newest: dict[str, PriceUpdate] = {}

    def accept(self, update: PriceUpdate) -> bool:
        """Whether to deliver ``update``; an accepted update becomes the feed's newest."""
        newest = self._newest.get(update.feed_id)
        if newest is not None:
            if update.order <= newest.order:
                return False
            if (update.price, update.ema_price) == (newest.price, newest.ema_price):
                return False  # unchanged, re-sent at a later slot
        self._newest[update.feed_id] = update
        return True

    def accept_all(self, updates: Iterable[PriceUpdate]) -> list[PriceUpdate]:
        """The updates that pass, in their original order."""
        return [update for update in updates if self.accept(update)]

    @property
    def newest_publish_times(self) -> Mapping[str, int]:
        return {feed_id: update.publish_time for feed_id, update in self._newest.items()}
