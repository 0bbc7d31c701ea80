from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from perpstream.domain.prices import PriceUpdate, PythPrice
from perpstream.feeds import OracleOrderFilter

from .hermes_shapes import BTC, ETH


def update(feed_id: str, publish_time: int, price: int = 100, *, slot: int | None = None) -> PriceUpdate:
    pyth = PythPrice(price, 1, -8, publish_time)
    return PriceUpdate(feed_id, pyth, pyth, "pyth-hermes", slot=slot)


def test_prices_sharing_a_second_pass_in_slot_order() -> None:
    seen = OracleOrderFilter()
    stream = [update(BTC, 10, 100, slot=1), update(BTC, 10, 101, slot=2), update(BTC, 10, 102, slot=3)]
    assert seen.accept_all(stream) == stream


def test_drops_repeats_and_older_updates_per_feed() -> None:
    seen = OracleOrderFilter()
    stream = [
        update(BTC, 10, slot=5),
        update(BTC, 10, slot=5),  # the same slot again (a gap fill overlapping the stream)
        update(ETH, 9, slot=4),
        update(BTC, 10, 99, slot=4),  # an older slot of the same second
        update(BTC, 9, slot=7),  # an older second
        update(BTC, 10, slot=6),  # unchanged, re-sent at a later slot
        update(BTC, 11, slot=8),  # the same price at a newer time: news for staleness
    ]
    assert seen.accept_all(stream) == [stream[0], stream[2], stream[6]]
    assert seen.newest_publish_times == {BTC: 11, ETH: 9}


def test_without_slots_the_first_update_of_a_second_wins() -> None:
    seen = OracleOrderFilter()
    assert seen.accept_all([update(BTC, 10, 1), update(BTC, 10, 2), update(BTC, 11, 3)]) == [
        update(BTC, 10, 1),
        update(BTC, 11, 3),
    ]


def test_feeds_are_independent() -> None:
    seen = OracleOrderFilter()
    assert seen.accept(update(BTC, 100))
    assert seen.accept(update(ETH, 5))


@given(st.lists(st.tuples(st.sampled_from([BTC, ETH]), st.integers(0, 5), st.integers(0, 8), st.integers(0, 2)), max_size=60))
def test_passes_exactly_the_new_prices_that_set_a_new_high(items: list[tuple[str, int, int, int]]) -> None:
    seen = OracleOrderFilter()
    passed = seen.accept_all(update(feed, t, price, slot=slot) for feed, t, slot, price in items)
    expected = []
    high: dict[str, tuple[tuple[int, int], int]] = {}
    for feed, t, slot, price in items:
        if feed not in high or ((t, slot) > high[feed][0] and (t, price) != (high[feed][0][0], high[feed][1])):
            high[feed] = ((t, slot), price)
            expected.append((feed, t, slot, price))
    assert [(u.feed_id, u.publish_time, u.slot, u.price.price) for u in passed] == expected
