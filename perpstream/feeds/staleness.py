"""Which feeds are stale: judged by oracle time, never by arrival time.

A price that arrives promptly can still be old — Hermes replays the last
price of a halted feed, a gap fill returns whatever was newest — so
freshness is ``now − publish_time``. Pure: the caller supplies ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs

from perpstream.domain.prices import PriceUpdate, normalize_feed_id

__all__ = ["DEFAULT_STALE_AFTER_MS", "Freshness", "StalenessTracker", "age_ms", "assess_freshness"]

DEFAULT_STALE_AFTER_MS = 10_000


@attrs.frozen
class Freshness:
    """How old one feed's newest price is."""

    feed_id: str
    publish_time: int | None  # None: no price seen yet
    age_ms: int | None  # None: no price seen yet
    stale: bool  # older than the threshold, or never seen


def age_ms(publish_time: int, now: float) -> int:
    """Milliseconds from ``publish_time`` (integer epoch seconds) to ``now`` (epoch seconds).

    Rounded down, and never negative: a publisher clock a little ahead of
    ours makes a price fresh, not younger than fresh.
    """
    return max(0, math.floor(now * 1000) - publish_time * 1000)


def assess_freshness(
    newest_publish_times: Mapping[str, int | None], now: float, stale_after_ms: int = DEFAULT_STALE_AFTER_MS
) -> dict[str, Freshness]:
    """The freshness of every feed in ``newest_publish_times``.

    A feed is stale when its age exceeds ``stale_after_ms``, or when it has
    never published (``None``).
    """
    report: dict[str, Freshness] = {}
    for feed_id, publish_time in newest_publish_times.items():
        if publish_time is None:
            report[feed_id] = Freshness(feed_id, None, None, True)
        else:
            age = age_ms(publish_time, now)
            report[feed_id] = Freshness(feed_id, publish_time, age, age > stale_after_ms)
    return report


class StalenessTracker:
    """The newest ``publish_time`` of each expected feed, and the verdict on it at any ``now``."""

    def __init__(self, feed_ids: Iterable[str] = (), *, stale_after_ms: int = DEFAULT_STALE_AFTER_MS) -> None:
        if stale_after_ms < 0:
            raise ValueError("stale_after_ms must be >= 0")
        self.stale_after_ms = stale_after_ms
        self._newest: dict[str, int | None] = {normalize_feed_id(feed_id): None for feed_id in feed_ids}

    def observe(self, update: PriceUpdate) -> None:
        self.record(update.feed_id, update.publish_time)

    def record(self, feed_id: str, publish_time: int) -> None:
        """Note a price; an older ``publish_time`` than the newest known is ignored."""
        feed_id = normalize_feed_id(feed_id)
        newest = self._newest.get(feed_id)
        if newest is None or publish_time > newest:
            self._newest[feed_id] = publish_time

    def freshness(self, feed_id: str, now: float) -> Freshness:
        feed_id = normalize_feed_id(feed_id)
        return assess_freshness({feed_id: self._newest.get(feed_id)}, now, self.stale_after_ms)[feed_id]

    def report(self, now: float) -> dict[str, Freshness]:
        """Every known feed's freshness."""
        return assess_freshness(self._newest, now, self.stale_after_ms)

    def stale(self, now: float) -> list[Freshness]:
        """The stale feeds, in the order they became known."""
        return [entry for entry in self.report(now).values() if entry.stale]
