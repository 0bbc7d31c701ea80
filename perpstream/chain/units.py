"""Conversions between the contract's 18-decimal integers and exact Decimals.

Every on-chain quantity is an integer scaled by 10^18 (a "wad"). Decimals made
here are exact: a private context wide enough for any uint256/int256 keeps
arithmetic from rounding, and results carry no trailing fractional zeros so
they print the way a person writes them.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Context, Decimal

__all__ = [
    "WAD_DECIMALS",
    "from_wad",
    "to_wad",
    "round_to_wad",
    "market_id_to_bytes32",
    "bytes32_to_market_id",
]

WAD_DECIMALS = 18
# 2^256 has 78 digits; 100 digits of precision makes every conversion exact.
_EXACT = Context(prec=100)
_ONE_WAD_UNIT = Decimal(1).scaleb(-WAD_DECIMALS)


def from_wad(value: int) -> Decimal:
    """The exact Decimal of an 18-decimal integer, without trailing zeros."""
    scaled = Decimal(value).scaleb(-WAD_DECIMALS, context=_EXACT)
    if scaled == scaled.to_integral_value():
        return scaled.quantize(Decimal(1), context=_EXACT)
    return scaled.normalize(context=_EXACT)


def to_wad(value: Decimal) -> int:
    """The 18-decimal integer of ``value``; refuses values finer than 10^-18.

    Refusing instead of rounding keeps a caller from sending a quantity that
    is not the one it computed; use :func:`round_to_wad` first when rounding
    is intended.
    """
    scaled = value.scaleb(WAD_DECIMALS, context=_EXACT)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {WAD_DECIMALS} decimal places")
    return int(scaled)


def round_to_wad(value: Decimal) -> Decimal:
    """``value`` truncated toward zero to 18 decimal places."""
    return value.quantize(_ONE_WAD_UNIT, rounding=ROUND_DOWN, context=_EXACT)


def market_id_to_bytes32(market_id: str) -> bytes:
    """The contract's form of a market id: UTF-8, right-padded with NULs."""
    raw = market_id.encode("utf-8")
    if not raw or len(raw) > 32:
        raise ValueError(f"market id must be 1..32 bytes of UTF-8: {market_id!r}")
    return raw.ljust(32, b"\0")


def bytes32_to_market_id(raw: bytes) -> str:
    """Inverse of :func:`market_id_to_bytes32`; raises ValueError on non-UTF-8."""
    text = raw.rstrip(b"\0").decode("utf-8")
    if not text or "\0" in text:
        raise ValueError(f"not a padded market id: 0x{raw.hex()}")
    return text
