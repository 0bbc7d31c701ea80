from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpstream.chain.units import (
    bytes32_to_market_id,
    from_wad,
    market_id_to_bytes32,
    round_to_wad,
    to_wad,
)

int256 = st.integers(min_value=-(2**255), max_value=2**256 - 1)


@given(int256)
def test_wad_round_trip_is_exact(value: int) -> None:
    assert to_wad(from_wad(value)) == value
    assert from_wad(value) == Decimal(f"{value}E-18")  # the constructor is exact


def test_from_wad_prints_without_trailing_zeros() -> None:
    assert str(from_wad(1500 * 10**18)) == "1500"
    assert str(from_wad(-5 * 10**17)) == "-0.5"
    assert str(from_wad(65_012_340_000_000_000_000_000)) == "65012.34"


def test_to_wad_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(ValueError, match="decimal places"):
        to_wad(Decimal("1e-19"))
    assert to_wad(round_to_wad(Decimal("1.0000000000000000019"))) == 10**18 + 1


@given(st.text(min_size=1, max_size=8).filter(lambda s: "\0" not in s))
def test_market_id_round_trip(market_id: str) -> None:
    assert bytes32_to_market_id(market_id_to_bytes32(market_id)) == market_id


def test_market_id_limits() -> None:
    with pytest.raises(ValueError):
        market_id_to_bytes32("x" * 33)
    with pytest.raises(ValueError):
        bytes32_to_market_id(b"\xff" + bytes(31))
    with pytest.raises(ValueError):
        bytes32_to_market_id(bytes(32))
