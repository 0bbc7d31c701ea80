from decimal import Decimal

import pytest

from perpstream.domain import FundingSource, FundingState, model_funding_rate

from .factories import market

D = Decimal
HOUR = 3_600_000
MARKET = market(skew_scale="1000", max_funding_rate_per_hour="0.001")


@pytest.mark.parametrize(
    ("skew", "rate"),
    [
        ("500", "0.0005"),  # 500 / 1000 × 0.001
        ("-250", "-0.00025"),
        ("0", "0"),
        ("1000", "0.001"),
        ("5000", "0.001"),  # clamped to +max
        ("-5000", "-0.001"),  # clamped to −max
    ],
)
def test_model_rate_is_the_clamped_skew_ratio(skew: str, rate: str) -> None:
    assert model_funding_rate(D(skew), MARKET) == D(rate)


def test_model_rate_with_a_zero_cap_is_zero() -> None:
    assert model_funding_rate(D("700"), market(max_funding_rate_per_hour="0")) == 0


def test_index_accrues_rate_times_price_times_hours() -> None:
    state = FundingState.start(0).advanced(0, price=D("100"), model_rate=D("0.001"))
    assert state.index_at(HOUR) == D("0.1")  # 0.001 × 100 × 1 h
    assert state.index_at(HOUR // 2) == D("0.05")
    # one millisecond: 0.1 / 3 600 000 = 2.777…·10⁻⁸, correctly rounded at 50 digits
    assert state.index_at(1) == D("2.7777777777777777777777777777777777777777777777778E-8")
    assert state.index_at(0) == 0


def test_accrual_is_piecewise_in_price_and_rate() -> None:
    state = FundingState.start(0, index=D("2")).advanced(0, price=D("100"), model_rate=D("0.001"))
    state = state.advanced(HOUR // 2, price=D("200"))  # 2 + 0.001 × 100 × 0.5 = 2.05
    assert (state.index, state.as_of_ms, state.price) == (D("2.05"), HOUR // 2, D("200"))
    state = state.advanced(HOUR, model_rate=D("-0.002"))  # + 0.001 × 200 × 0.5 = 2.15
    assert (state.index, state.rate_per_hour) == (D("2.15"), D("-0.002"))
    assert state.index_at(2 * HOUR) == D("1.75")  # 2.15 − 0.002 × 200 × 1
    assert state.source is FundingSource.MODEL


def test_nothing_accrues_before_the_first_price() -> None:
    state = FundingState.start(0, rate_per_hour=D("0.001"))
    assert state.index_at(10 * HOUR) == 0
    assert state.advanced(10 * HOUR, price=D("50")).index_at(11 * HOUR) == D("0.05")


def test_chain_update_is_authoritative_and_then_extrapolated_at_the_chain_rate() -> None:
    state = FundingState.start(0).advanced(0, price=D("100"), model_rate=D("0.001"))
    state = state.advanced(2 * HOUR)  # model: 0.2
    state = state.with_chain_update(rate_per_hour=D("-0.0005"), index=D("7"), timestamp_ms=HOUR)
    assert state.source is FundingSource.CHAIN
    # from the chain's own timestamp: 7 − 0.0005 × 100 × (2h − 1h)
    assert state.index_at(2 * HOUR) == D("6.95")
    # the model no longer drives the index, the price still does
    state = state.advanced(2 * HOUR, price=D("300"), model_rate=D("0.001"))
    assert (state.rate_per_hour, state.index) == (D("-0.0005"), D("6.95"))
    assert state.index_at(3 * HOUR) == D("6.8")  # 6.95 − 0.0005 × 300 × 1


def test_time_never_runs_backwards() -> None:
    state = FundingState.start(0).advanced(0, price=D("100"), model_rate=D("0.001"))
    state = state.with_chain_update(rate_per_hour=D("0.001"), index=D("1"), timestamp_ms=5 * HOUR)
    assert state.index_at(4 * HOUR) == D("1")  # a chain clock ahead of ours
    later = state.advanced(4 * HOUR, price=D("200"))
    assert (later.index, later.as_of_ms, later.price) == (D("1"), 5 * HOUR, D("200"))
    assert later.index_at(6 * HOUR) == D("1.2")  # 1 + 0.001 × 200 × 1
