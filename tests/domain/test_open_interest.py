from decimal import Decimal

import pytest

from perpstream.domain import OpenInterest, Side

from .factories import position

D = Decimal


def test_open_modify_close_keep_running_sums() -> None:
    long = position(1, Side.LONG, size="2.5")
    short = position(2, Side.SHORT, size="4")
    oi = OpenInterest().opened(long).opened(short)
    assert (oi.long, oi.short, oi.skew, oi.open_positions) == (D("2.5"), D("4"), D("-1.5"), 2)
    assert oi.usd(D("100")) == D("650")  # (2.5 + 4) × 100

    bigger = long.modified(size=D("6"), collateral=D(10), entry_price=D(100), entry_funding_index=D(0))
    oi = oi.modified(long, bigger)
    assert (oi.long, oi.skew, oi.open_positions) == (D("6"), D("2"), 2)

    oi = oi.closed(short)
    assert (oi.long, oi.short, oi.skew, oi.open_positions) == (D("6"), D("0"), D("6"), 1)
    oi = oi.closed(bigger)
    assert oi == OpenInterest()


def test_sums_of_chain_quantities_stay_exact() -> None:
    oi = OpenInterest()
    for n in range(1, 101):
        oi = oi.opened(position(n, Side.LONG, size="123456789.123456789012345678"))
    assert oi.long == D("12345678912.3456789012345678")


def test_closing_what_was_never_opened_is_an_error() -> None:
    with pytest.raises(ValueError):
        OpenInterest().closed(position(1, Side.SHORT))
    with pytest.raises(ValueError):
        OpenInterest().opened(position(1, Side.LONG, size="1")).closed(position(1, Side.LONG, size="2"))


def test_a_modification_cannot_change_side() -> None:
    oi = OpenInterest().opened(position(1, Side.LONG))
    with pytest.raises(ValueError):
        oi.modified(position(1, Side.LONG), position(1, Side.SHORT))
