from decimal import Decimal

import attrs
import pytest

from perpstream.domain import Side

from .factories import ACCOUNT, market, position, position_id


def test_side_signs_and_chain_flag() -> None:
    assert (Side.LONG.sign, Side.SHORT.sign) == (1, -1)
    assert Side.from_is_long(True) is Side.LONG
    assert Side.from_is_long(False) is Side.SHORT
    assert Side.LONG.value == "long" and Side.SHORT.value == "short"


def test_position_id_is_canonical_lower_case() -> None:
    p = position(0xABC)
    upper = attrs.evolve(p, position_id=p.position_id.upper().replace("0X", "0x"))
    assert upper.position_id == position_id(0xABC)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("position_id", "0x1234", ValueError),
        ("account", "0x1234", ValueError),
        ("size", Decimal("0"), ValueError),
        ("size", Decimal("-1"), ValueError),
        ("size", 1.5, TypeError),
        ("size", Decimal("NaN"), TypeError),
        ("collateral", Decimal("-0.01"), ValueError),
        ("entry_price", Decimal("0"), ValueError),
        ("entry_funding_index", 0, TypeError),
        ("side", "long", TypeError),
    ],
)
def test_position_rejects_bad_fields(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        attrs.evolve(position(), **{field: value})


def test_negative_entry_funding_index_is_fine() -> None:
    assert position(entry_funding_index="-3.5").entry_funding_index == Decimal("-3.5")


def test_modified_keeps_identity_side_and_owner() -> None:
    p = position(7, Side.SHORT)
    q = p.modified(size=Decimal(2), collateral=Decimal(5), entry_price=Decimal(99), entry_funding_index=Decimal(1))
    assert (q.position_id, q.side, q.account, q.market_id) == (p.position_id, Side.SHORT, ACCOUNT, p.market_id)
    assert (q.size, q.collateral, q.entry_price, q.entry_funding_index) == (2, 5, 99, 1)


@pytest.mark.parametrize(
    "overrides",
    [
        {"mmr": "0"},
        {"mmr": "0.8333333333333333333333333333333333333333333333334"},  # 1.2 × mmr ≥ 1
        {"liquidation_fee_ratio": "-0.01"},
        {"min_keeper_fee": "101"},
        {"max_leverage": "0"},
        {"skew_scale": "0"},
        {"max_funding_rate_per_hour": "-0.001"},
    ],
)
def test_market_params_reject_unusable_values(overrides: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        market(**overrides)


def test_market_params_accept_the_largest_usable_mmr_and_require_decimals() -> None:
    assert market(mmr="0.83").maintenance_margin_ratio == Decimal("0.83")
    with pytest.raises(TypeError):
        attrs.evolve(market(), skew_scale=1000)

