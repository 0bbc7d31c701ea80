"""The exchange contract's own margin arithmetic, integer for integer.

Whether a position can be liquidated is the contract's decision, so the
service decides it with the contract's formula and the contract's rounding:
every quantity is an 18-decimal integer (a "wad"), products are divided by
10^18 at the same points as in ``PerpExchange.vy``, signed divisions
truncate toward zero (the EVM's ``SDIV``, which Vyper's ``//`` compiles to
for signed integers) and unsigned ones floor. ``equity < maintenance`` is the
contract's ``assert`` in ``liquidate``; anything else here (health factors,
liquidation prices) is display arithmetic and lives in :mod:`risk`.

Prices reach the contract from a Pyth-shaped oracle as ``(price, expo)``;
:func:`pyth_price_to_wad` is the conversion the contract applies.
"""

from __future__ import annotations

import attrs

__all__ = ["WAD", "ContractMargin", "contract_margin", "pyth_price_to_wad", "keeper_reward"]

WAD = 10**18


def _div_trunc(numerator: int, denominator: int) -> int:
    """Signed integer division rounding toward zero (EVM ``SDIV``)."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def pyth_price_to_wad(price: int, expo: int) -> int:
    """A Pyth ``price × 10^expo`` as a wad, as the contract converts it.

    Exact for ``expo >= -18`` (every Pyth feed); finer exponents floor.
    """
    if price <= 0:
        raise ValueError(f"oracle price must be positive, got {price}")
    shift = 18 + expo
    return price * 10**shift if shift >= 0 else price // 10 ** (-shift)


@attrs.frozen
class ContractMargin:
    """A position's margin as the contract computes it, in wads."""

    equity: int
    maintenance: int
    notional: int

    @property
    def liquidatable(self) -> bool:
        """The contract's test in ``liquidate``: ``equity < maintenance``."""
        return self.equity < self.maintenance


def contract_margin(
    *,
    is_long: bool,
    size: int,
    collateral: int,
    entry_price: int,
    entry_funding_index: int,
    funding_index: int,
    price: int,
    maintenance_margin_ratio: int,
) -> ContractMargin:
    """Equity, maintenance margin and notional at ``price`` (all wads).

    ``funding_index`` is the index the contract holds (the last one posted on
    chain), not an extrapolation: the contract knows no other.
    """
    sign = 1 if is_long else -1
    price_pnl = sign * _div_trunc(size * (price - entry_price), WAD)
    funding_owed = sign * _div_trunc(size * (funding_index - entry_funding_index), WAD)
    equity = collateral + price_pnl - funding_owed
    notional = size * price // WAD
    maintenance = notional * maintenance_margin_ratio // WAD
    return ContractMargin(equity=equity, maintenance=maintenance, notional=notional)


def keeper_reward(
    margin: ContractMargin, *, liquidation_fee_ratio: int, min_keeper_fee: int, max_keeper_fee: int
) -> int:
    """The reward ``liquidate`` pays: the clamped fee, never more than the equity left."""
    reward = min(max(margin.notional * liquidation_fee_ratio // WAD, min_keeper_fee), max_keeper_fee)
    if margin.equity <= 0:
        return 0
    return min(reward, margin.equity)
