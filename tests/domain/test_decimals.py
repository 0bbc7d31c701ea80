import decimal
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpstream.domain import decimal_context, exact_context, from_wad, to_wad, to_wire


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("65012.34", "65012.34"),
        ("6.5E+4", "65000"),
        ("1.500", "1.5"),
        ("100", "100"),
        ("100.000", "100"),
        ("-0", "0"),
        ("-0.000", "0"),
        ("-12.30", "-12.3"),
        ("1E-20", "0.00000000000000000001"),
        ("123456789012345678901234567890.123456789012345678901", "123456789012345678901234567890.123456789012345678901"),
    ],
)
def test_to_wire_is_plain_notation(value: str, wire: str) -> None:
    assert to_wire(Decimal(value)) == wire


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_to_wire_refuses_non_finite(value: str) -> None:
    with pytest.raises(ValueError):
        to_wire(Decimal(value))


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_to_wire_round_trips_exactly(value: Decimal) -> None:
    text = to_wire(value)
    assert "e" not in text.lower()
    assert Decimal(text) == value


def test_from_wad_is_exact() -> None:
    assert from_wad(65_012_340_000_000_000_000_000) == Decimal("65012.34")
    assert from_wad(-1) == Decimal("-0.000000000000000001")
    # Far more digits than the context's 50: still exact.
    big = 10**80 + 1
    assert Fraction(from_wad(big)) * 10**18 == big
    with pytest.raises(TypeError):
        from_wad(True)


@given(st.integers(min_value=-(2**255), max_value=2**256 - 1))
def test_wad_round_trip(raw: int) -> None:
    assert to_wad(from_wad(raw)) == raw


def test_to_wad_refuses_to_drop_digits_unless_asked() -> None:
    value = Decimal("1.0000000000000000015")
    with pytest.raises(ValueError, match="more than 18 decimals"):
        to_wad(value)
    assert to_wad(value, decimal.ROUND_DOWN) == 1_000_000_000_000_000_001
    assert to_wad(value, decimal.ROUND_HALF_EVEN) == 1_000_000_000_000_000_002
    assert to_wad(Decimal("1E+30")) == 10**48


def test_domain_context_is_fixed_whatever_the_callers_context() -> None:
    with decimal.localcontext(decimal.Context(prec=3)):
        with decimal_context():
            assert Decimal(1) / Decimal(3) == Decimal("0." + "3" * 50)
            assert Decimal(2) / Decimal(3) == Decimal("0." + "6" * 49 + "7")


def test_floats_cannot_enter_domain_arithmetic() -> None:
    with decimal_context(), pytest.raises(decimal.FloatOperation):
        Decimal(0.1)
    with decimal_context(), pytest.raises(decimal.FloatOperation):
        Decimal(1) < 0.5  # noqa: B015


def test_exact_context_never_rounds() -> None:
    with exact_context():
        product = Decimal("123456789.123456789012345678") * Decimal("98765.432109876543210987")
        assert Fraction(product) == Fraction(Decimal("123456789.123456789012345678")) * Fraction(
            Decimal("98765.432109876543210987")
        )
        with pytest.raises(decimal.Inexact):
            Decimal(1) / Decimal(3)
