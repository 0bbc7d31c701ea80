"""Exact decimal arithmetic: fixed contexts, wire rendering, chain integers.

Money never touches a float. Domain code does its arithmetic in one of two
fixed contexts, never in whatever context the calling thread or task happens
to have, so results do not depend on the caller:

- :func:`exact_context` for sums, differences and products. Those are always
  finite decimals, so they are computed without any rounding; ``Inexact`` is
  trapped, so a result that ever needed rounding would raise, not round.
- :func:`decimal_context` for divisions (leverage, health, funding accrual):
  50 significant digits, rounded half-even, once.

Both trap ``FloatOperation``: mixing in a float raises instead of silently
importing binary rounding error. Comparisons that must never be wrong at a
boundary (risk levels) are made on exact values, or on exact rationals
(``fractions.Fraction``, which converts a ``Decimal`` exactly) where a
division is involved.
"""

from __future__ import annotations

import decimal
from contextlib import AbstractContextManager
from decimal import Decimal

__all__ = [
    "DECIMAL_CONTEXT",
    "EXACT_CONTEXT",
    "WAD_DECIMALS",
    "decimal_context",
    "exact_context",
    "from_wad",
    "to_wad",
    "to_wire",
]

WAD_DECIMALS = 18
"""On chain every quantity is an integer scaled by ``10**18``."""

DECIMAL_CONTEXT = decimal.Context(
    prec=50,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
        decimal.FloatOperation,
    ],
)
"""The context of every domain computation (copied, never mutated in place)."""

EXACT_CONTEXT = decimal.Context(
    prec=1000,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.Inexact,
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
        decimal.FloatOperation,
    ],
)
"""For ``+ − ×`` that must not round: a thousand digits, and ``Inexact`` trapped."""


def decimal_context() -> AbstractContextManager[decimal.Context]:
    """Enter a private copy of :data:`DECIMAL_CONTEXT` for a block of arithmetic."""
    return decimal.localcontext(DECIMAL_CONTEXT)


def exact_context() -> AbstractContextManager[decimal.Context]:
    """Enter a private copy of :data:`EXACT_CONTEXT`: arithmetic that raises rather than rounds."""
    return decimal.localcontext(EXACT_CONTEXT)


def to_wire(value: Decimal) -> str:
    """Render a decimal the way the wire protocol wants it: plain notation.

    Never exponent form (``6.5E+4`` → ``"65000"``), no trailing fractional
    zeros (``"1.500"`` → ``"1.5"``), no ``"-0"``. The digits are not rounded:
    what is rendered is exactly the value held. Works on the digits as text,
    so no context precision can intervene.
    """
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        return "0"
    return text


def from_wad(raw: int) -> Decimal:
    """An 18-decimal chain integer (``uint256`` or ``int256``) as an exact decimal."""
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise TypeError(f"expected an int, got {type(raw).__name__}")
    return Decimal(f"{raw}E-{WAD_DECIMALS}")


def to_wad(value: Decimal, rounding: str | None = None) -> int:
    """An exact decimal as an 18-decimal chain integer.

    Without ``rounding`` a value with more than 18 fractional digits is an
    error (``ValueError``): silently dropping digits of money is a bug. Pass a
    ``decimal`` rounding mode (e.g. ``decimal.ROUND_DOWN``) to round on purpose.
    """
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    # Wide enough that moving the exponent is exact whatever the value's size.
    context = decimal.Context(prec=len(value.as_tuple().digits) + 1, traps=[decimal.InvalidOperation])
    scaled = value.scaleb(WAD_DECIMALS, context=context)
    integral = scaled.to_integral_value(rounding=rounding or decimal.ROUND_HALF_EVEN, context=context)
    if rounding is None and integral != scaled:
        raise ValueError(f"{value} has more than {WAD_DECIMALS} decimals; pass a rounding mode")
    return int(integral)
