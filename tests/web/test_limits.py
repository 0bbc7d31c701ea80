"""Abuse limits as pure logic: token buckets, per-address accounting, cooldowns, proxies."""

from __future__ import annotations

import pytest

from perpstream.config import LimitsConfig
from perpstream.web.limits import ClientAddresses, ClientLimits, Refusal, TokenBucket

ALICE = "0x" + "a1" * 20


def limits(**overrides: object) -> ClientLimits:
    return ClientLimits(LimitsConfig(**overrides), max_connections=2)  # type: ignore[arg-type]


def test_a_bucket_grants_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=5.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.2)  # one token every 1/5 s
    assert bucket.take(0.1) == pytest.approx(0.1)
    assert bucket.take(0.2) == 0.0
    assert bucket.take(10.0) == 0.0  # refilled, but never beyond the burst
    assert [bucket.take(10.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.2)]


def test_connections_per_address_are_counted_across_connections() -> None:
    table = limits()
    assert table.connect("10.0.0.1", 0.0) is None
    assert table.connect("10.0.0.1", 0.0) is None
    refusal = table.connect("10.0.0.1", 0.0)
    assert refusal is not None and refusal.code == "too_many_connections"
    assert table.connect("10.0.0.2", 0.0) is None  # another address has its own allowance
    table.disconnect("10.0.0.1", 0.0)
    assert table.connect("10.0.0.1", 0.0) is None


def test_subscriptions_and_distinct_accounts_per_address() -> None:
    table = limits(max_subscriptions_per_client=3, max_accounts_per_client=1)
    assert table.subscribe("ip", ALICE, 0.0) is None
    assert table.subscribe("ip", ALICE, 0.0) is None  # the same account again: still one account
    refusal = table.subscribe("ip", "0x" + "b2" * 20, 0.0)
    assert refusal is not None and refusal.code == "too_many_accounts"
    assert table.subscribe("ip", None, 0.0) is None
    refusal = table.subscribe("ip", None, 0.0)
    assert refusal is not None and refusal.code == "too_many_subscriptions"
    table.unsubscribe("ip", ALICE, 0.0)
    table.unsubscribe("ip", ALICE, 0.0)
    assert table.subscribe("ip", "0x" + "b2" * 20, 0.0) is None  # Alice no longer watched: room for Bob


def test_retry_after_is_a_pace_that_never_earns_a_cooldown() -> None:
    table = limits(strikes_before_cooldown=5, strike_window_s=60.0, cooldown_s=30.0)
    for _ in range(2):
        table.connect("ip", 0.0)
    now = 0.0
    for _ in range(20):
        refusal = table.connect("ip", now)
        assert refusal is not None and refusal.retry_after_s == 15.0  # 60 s / (5 - 1)
        assert table.cooling_down("ip", now) == 0.0
        now += refusal.retry_after_s


def test_repeated_strikes_cool_an_address_down_then_it_is_forgotten() -> None:
    table = limits(strikes_before_cooldown=3, strike_window_s=10.0, cooldown_s=60.0)
    strike = Refusal("rate_limited", "slow down", 0.2)
    assert table.strike("ip", 0.0, strike).retry_after_s == 5.0
    assert table.strike("ip", 1.0, strike).retry_after_s == 5.0
    third = table.strike("ip", 2.0, strike)
    assert third.retry_after_s == 60.0  # this one earned the cooldown, and says how long
    assert table.cooling_down("ip", 2.0) == 60.0
    assert table.cooling_down("ip", 61.5) == pytest.approx(0.5)
    assert table.cooling_down("other", 3.0) == 0.0
    assert table.cooldowns == 1
    assert table.cooling_down("ip", 62.0) == 0.0
    assert len(table) == 0  # nothing held, nothing owed: the entry is gone


def test_strikes_outside_the_window_do_not_add_up() -> None:
    table = limits(strikes_before_cooldown=3, strike_window_s=10.0, cooldown_s=60.0)
    strike = Refusal("rate_limited", "slow down", 0.2)
    for t in (0.0, 6.0, 12.0, 18.0):
        table.strike("ip", t, strike)
    assert table.cooling_down("ip", 18.0) == 0.0


def test_a_zero_cooldown_never_cools_down() -> None:
    table = limits(strikes_before_cooldown=1, cooldown_s=0.0)
    for t in range(10):
        table.strike("ip", float(t), Refusal("rate_limited", "x", 0.1))
    assert table.cooling_down("ip", 10.0) == 0.0


def test_the_table_follows_live_clients() -> None:
    table = limits(strike_window_s=10.0)
    for n in range(1000):
        address = f"10.0.{n // 256}.{n % 256}"
        table.connect(address, 0.0)
        table.subscribe(address, ALICE, 0.0)
        table.unsubscribe(address, ALICE, 0.0)
        table.disconnect(address, 0.0)
    assert len(table) == 0


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),  # not a trusted proxy: the header is ignored
        ("10.0.0.5", ["1.2.3.4"], "1.2.3.4"),
        ("10.0.0.5", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),  # the client's own claim (left) is not believed
        ("10.0.0.5", ["1.2.3.4, 10.0.0.7"], "1.2.3.4"),  # a chain of trusted proxies is walked
        ("10.0.0.5", ["1.2.3.4", "10.0.0.7"], "1.2.3.4"),  # several header lines are one list
        ("10.0.0.5", [], "10.0.0.5"),
        ("10.0.0.5", ["garbage"], "10.0.0.5"),
        ("10.0.0.5", ["10.0.0.7"], "10.0.0.5"),  # only proxies: the nearest peer stands
        ("::1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(peer: str, header: list[str], expected: str) -> None:
    addresses = ClientAddresses(["10.0.0.0/8", "::1"])
    assert addresses.resolve(peer, header) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert ClientAddresses([]).resolve("127.0.0.1", ["1.2.3.4"]) == "127.0.0.1"


def test_addresses_that_struck_and_left_are_swept_after_the_window() -> None:
    table = limits(strikes_before_cooldown=100, strike_window_s=10.0)
    for n in range(500):
        address = f"10.1.{n // 256}.{n % 256}"
        table.connect(address, 0.0)
        table.connect(address, 0.0)
        table.connect(address, 0.0)  # refused: a strike that outlives the connections
        table.disconnect(address, 0.0)
        table.disconnect(address, 0.0)
    assert len(table) == 500  # each owes a strike for one window
    table.connect("10.9.9.9", 10.5)
    assert len(table) == 1  # the next connection after the window swept them
