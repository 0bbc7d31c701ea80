from __future__ import annotations

import pytest

from perpstream.domain.prices import PriceUpdate, PythPrice
from perpstream.feeds import Freshness, StalenessTracker, age_ms, assess_freshness

from .hermes_shapes import BTC, ETH


def update(feed_id: str, publish_time: int) -> PriceUpdate:
    price = PythPrice(100, 1, -8, publish_time)
    return PriceUpdate(feed_id, price, price, "pyth-hermes")


def test_age_is_measured_from_publish_time_in_whole_milliseconds() -> None:
    assert age_ms(1000, 1003.2509) == 3250
    assert age_ms(1000, 1000.0) == 0


def test_a_publisher_clock_ahead_of_ours_counts_as_fresh_not_negative() -> None:
    assert age_ms(1005, 1003.0) == 0


def test_threshold_is_exclusive() -> None:
    report = assess_freshness({BTC: 1000, ETH: 1000}, 1010.0, stale_after_ms=10_000)
    assert report[BTC] == Freshness(BTC, 1000, 10_000, False)
    assert assess_freshness({BTC: 1000}, 1010.001, 10_000)[BTC].stale


def test_expected_feeds_never_seen_are_stale() -> None:
    tracker = StalenessTracker([ETH, "0x" + BTC.upper()])
    tracker.observe(update(ETH, 1000))
    assert tracker.stale(1001.0) == [Freshness(BTC, None, None, True)]
    assert tracker.freshness(ETH, 1001.0) == Freshness(ETH, 1000, 1000, False)


def test_freshness_follows_oracle_time_not_arrival() -> None:
    # An update that arrives now but was published 30 s ago is stale on arrival.
    tracker = StalenessTracker([BTC], stale_after_ms=10_000)
    tracker.observe(update(BTC, 970))
    assert tracker.freshness(BTC, 1000.0) == Freshness(BTC, 970, 30_000, True)


def test_an_older_publish_time_does_not_make_a_feed_look_older() -> None:
    tracker = StalenessTracker([BTC])
    tracker.record(BTC, 1000)
    tracker.record("0x" + BTC, 990)
    assert tracker.report(1001.0)[BTC].publish_time == 1000


def test_default_threshold_is_ten_seconds() -> None:
    tracker = StalenessTracker([BTC])
    tracker.record(BTC, 1000)
    assert not tracker.freshness(BTC, 1010.0).stale
    assert tracker.freshness(BTC, 1010.5).stale


def test_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError):
        StalenessTracker(stale_after_ms=-1)
