from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from perpstream.domain.prices import PriceUpdate, PythPrice
from perpstream.feeds import OracleOrderFilter

from .hermes_shapes import BTC, ETH


def update(feed_id: str, publish_time: int, price: int = 100) -> PriceUpdate:
    pyth = PythPrice(price, 1, -8, publish_time)
    return PriceUpdate(feed_id, pyth, pyth, "pyth-hermes")


def test_drops_duplicates_and_older_updates_per_feed() -> None:
    seen = OracleOrderFilter()
    stream = [update(BTC, 10), update(BTC, 10, price=101), update(ETH, 9), update(BTC, 9), update(BTC, 11)]
    assert seen.accept_all(stream) == [stream[0], stream[2], stream[4]]
    assert seen.newest_publish_times == {BTC: 11, ETH: 9}


def test_feeds_are_independent() -> None:
    seen = OracleOrderFilter()
    assert seen.accept(update(BTC, 100))
    assert seen.accept(update(ETH, 5))


@given(st.lists(st.tuples(st.sampled_from([BTC, ETH]), st.integers(0, 30)), max_size=60))
def test_passes_exactly_the_updates_that_set_a_new_high(items: list[tuple[str, int]]) -> None:
    seen = OracleOrderFilter()
    passed = seen.accept_all(update(feed, t) for feed, t in items)
    expected = []
    high: dict[str, int] = {}
    for feed, t in items:
        if feed not in high or t > high[feed]:
            high[feed] = t
            expected.append((feed, t))
    assert [(u.feed_id, u.publish_time) for u in passed] == expected
