"""Positions as the chain reports them: side, size, collateral, entry state.

A :class:`Position` is an immutable value; a ``PositionModified`` event
produces a new one (:meth:`Position.modified`). Identity is the chain's
``positionId`` (bytes32), rendered as lower-case ``0x`` hex.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import Enum

import attrs

__all__ = ["Position", "Side"]

_POSITION_ID = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class Side(str, Enum):
    """Long or short; the wire protocol's ``side`` strings are the values."""

    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        """+1 for long, −1 for short: the ``s`` of every signed formula."""
        return 1 if self is Side.LONG else -1

    @classmethod
    def from_is_long(cls, is_long: bool) -> Side:
        """The side of a ``PositionOpened(isLong=…)`` event."""
        return cls.LONG if is_long else cls.SHORT


def _position_id(value: str) -> str:
    text = value.lower()
    if not _POSITION_ID.fullmatch(text):
        raise ValueError(f"position_id must be 0x and 64 hex digits, got {value!r}")
    return text


def _check_address(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ValueError(f"{attribute.name} must be a 0x-prefixed 20-byte hex address, got {value!r}")


def _finite_decimal(_: object, attribute: attrs.Attribute[Decimal], value: object) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"{attribute.name} must be a finite Decimal, got {value!r}")


def _positive(_: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _not_negative(_: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


@attrs.frozen
class Position:
    """One open isolated-margin position.

    ``account`` is kept as given (the chain layer supplies the EIP-55 form);
    only its shape is checked. Sizes are in base units, money in USD.
    """

    position_id: str = attrs.field(converter=_position_id)
    account: str = attrs.field(validator=_check_address)
    market_id: str
    side: Side = attrs.field(validator=attrs.validators.instance_of(Side))
    size: Decimal = attrs.field(validator=[_finite_decimal, _positive])
    collateral: Decimal = attrs.field(validator=[_finite_decimal, _not_negative])
    entry_price: Decimal = attrs.field(validator=[_finite_decimal, _positive])
    entry_funding_index: Decimal = attrs.field(validator=_finite_decimal)

    def modified(
        self,
        *,
        size: Decimal,
        collateral: Decimal,
        entry_price: Decimal,
        entry_funding_index: Decimal,
    ) -> Position:
        """The position after a ``PositionModified`` event (side and owner never change)."""
        return attrs.evolve(
            self,
            size=size,
            collateral=collateral,
            entry_price=entry_price,
            entry_funding_index=entry_funding_index,
        )
