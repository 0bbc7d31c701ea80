"""Prices on the pure core (the newest by (publish_time, slot) wins, ages are computed when asked) and the grid they go out on."""

from __future__ import annotations

from decimal import Decimal

import pytest

from perpstream.services.market import next_price_slot
from tests.services.builders import T0_MS, core, price


def test_every_newer_slot_is_taken_within_one_second() -> None:
    market = core()
    accepted = [market.on_price(price(value, slot=slot), T0_MS).price_changed
                for value, slot in [("100", 10), ("101", 11), ("102", 12), ("99", 11), ("102", 12)]]
    assert accepted == [True, True, True, False, False]  # an older slot and an exact repeat are dropped
    assert market.price.price.value == Decimal(102)


def test_an_older_second_is_dropped_whatever_its_slot() -> None:
    market = core()
    market.on_price(price("100", at_ms=T0_MS, slot=10), T0_MS)
    assert not market.on_price(price("90", at_ms=T0_MS - 1000, slot=50), T0_MS).price_changed
    assert market.on_price(price("101", at_ms=T0_MS + 1000, slot=1), T0_MS).price_changed


def test_prices_without_a_slot_are_taken_unless_repeated() -> None:
    market = core()
    assert market.on_price(price("100"), T0_MS).price_changed
    assert market.on_price(price("101"), T0_MS).price_changed
    assert not market.on_price(price("101"), T0_MS).price_changed


def test_the_first_price_refreshes_market_stats() -> None:
    market = core()
    assert market.stats_message(T0_MS).price is None
    assert market.on_price(price("100", slot=1), T0_MS).stats_changed
    assert market.stats_message(T0_MS).price == Decimal(100)
    assert not market.on_price(price("101", slot=2), T0_MS).stats_changed


def test_a_stale_price_reports_its_true_age() -> None:
    market = core(stale_after_ms=10_000)
    market.on_price(price("100", slot=1), T0_MS)
    fresh = market.price_message(T0_MS + 500)
    assert (fresh.age_ms, fresh.stale) == (500, False)
    later = market.price_message(T0_MS + 47_000)
    assert (later.age_ms, later.stale) == (47_000, True)
    assert later.update_data == ("0x0102",)
    assert market.went_stale(T0_MS + 47_000) and not market.went_stale(T0_MS + 48_000)


def test_a_non_positive_price_is_refused_not_fatal() -> None:
    market = core()
    market.on_price(price("100", slot=1), T0_MS)
    effects = market.on_price(price("0", slot=2), T0_MS)
    assert effects.refused and not effects.price_changed
    assert market.price.price.value == Decimal(100)
    effects = market.on_price(price("-5", slot=3), T0_MS)
    assert effects.refused and market.price.price.value == Decimal(100)


@pytest.mark.parametrize(("now", "expected"), [
    (10.0, 11.0),      # on the grid: exactly one interval on
    (10.0004, 11.0),   # just after a slot (publishing took a moment): no drift
    (10.4, 11.0),      # off the grid: the next slot, at least half an interval on
    (10.6, 12.0),
])
def test_prices_go_out_on_a_grid_every_market_shares(now: float, expected: float) -> None:
    assert next_price_slot(now, 1.0) == pytest.approx(expected)
