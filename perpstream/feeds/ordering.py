"""Dropping repeated and out-of-order oracle updates.

Hermes repeats itself: every stream event carries every requested feed as of
that slot, so a feed that did not tick is sent again unchanged, and the gap
fill after a reconnect overlaps what the stream then delivers. Downstream
wants each feed's prices once and moving forward in oracle time, so an update
passes only if its ``publish_time`` is newer than anything already passed for
its feed. That drops duplicates of ``(feed_id, publish_time)`` — the first
update of a second wins, which is Pyth's own "benchmark" choice — and any
update older than the newest seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from perpstream.domain.prices import PriceUpdate

__all__ = ["PublishTimeFilter"]


class PublishTimeFilter:
    """Passes an update only if it is the newest yet for its feed."""

    def __init__(self) -> None:
        self._newest: dict[str, int] = {}

    def accept(self, update: PriceUpdate) -> bool:
        """Whether to deliver ``update``; an accepted update becomes the feed's newest."""
        newest = self._newest.get(update.feed_id)
        if newest is not None and update.publish_time <= newest:
            return False
        self._newest[update.feed_id] = update.publish_time
        return True

    def accept_all(self, updates: Iterable[PriceUpdate]) -> list[PriceUpdate]:
        """The updates that pass, in their original order."""
        return [update for update in updates if self.accept(update)]

    @property
    def newest_publish_times(self) -> Mapping[str, int]:
        return dict(self._newest)
