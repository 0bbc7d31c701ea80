"""Stream keys: which stream a client asked for, validated, and its topic names.

One place decides what a valid market id or address is, so the WebSocket
paths, the multiplexed subscribe messages and the REST routes refuse bad
input the same way, with the close code docs/websocket.md gives.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import attrs
from eth_utils import to_checksum_address

from perpstream.protocol import Channel, CloseCode

__all__ = [
    "BadStreamParameter",
    "Since",
    "StreamKey",
    "parse_address",
    "parse_market_id",
    "parse_since",
]

_HEX_ADDRESS = re.compile(r"(?:0x|0X)?([0-9a-fA-F]{40})")
_MAX_PARAMETER = 128  # longer path segments are refused before any parsing
_MAX_EPOCH = 64
MAX_OFFSET = 2**53 - 1  # the largest integer every JSON client reads exactly


class BadStreamParameter(ValueError):
    """A stream parameter the server refuses; carries the error code and close code."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


def parse_address(text: str) -> str:
    """A 20-byte hex address, with or without ``0x``, in EIP-55 form.

    All-lower and all-upper hex are accepted as they are; mixed case claims
    to be an EIP-55 checksum and must be a correct one (a typo caught).
    """
    shown = text[:_MAX_PARAMETER]
    match = _HEX_ADDRESS.fullmatch(text) if len(text) <= 42 else None
    if match is None:
        raise BadStreamParameter(
            "invalid_address", f"not a 20-byte hex address: {shown!r}", CloseCode.INVALID_PARAMETER
        )
    digits = match.group(1)
    checksummed = to_checksum_address("0x" + digits)
    if digits not in (digits.lower(), digits.upper()) and checksummed[2:] != digits:
        raise BadStreamParameter(
            "invalid_address", f"mixed-case address with a wrong EIP-55 checksum: {shown!r}",
            CloseCode.INVALID_PARAMETER,
        )
    return checksummed


def parse_market_id(text: str, known: Collection[str]) -> str:
    """A configured market id, case-insensitive on input, lower-case out."""
    market_id = text.lower()
    if len(text) > _MAX_PARAMETER or market_id not in known:
        shown = text[:_MAX_PARAMETER]
        raise BadStreamParameter(
            "unknown_market", f"unknown market: {shown!r}", CloseCode.UNKNOWN_MARKET
        )
    return market_id


@attrs.frozen
class Since:
    """Where a client's copy of a stream ends: the last ``(epoch, offset)`` it received."""

    epoch: str
    offset: int


def _since_error(message: str) -> BadStreamParameter:
    return BadStreamParameter("invalid_since", message, CloseCode.INVALID_PARAMETER)


def parse_since(epoch: object, offset: object) -> Since:
    """A resume position, from a subscribe message's ``since`` or a path's query.

    ``offset`` may be the decimal text of a query parameter; ``epoch`` is
    whatever string the server sent (the server never sends a longer one).
    """
    if not isinstance(epoch, str) or not 1 <= len(epoch) <= _MAX_EPOCH:
        shown = epoch[:_MAX_PARAMETER] if isinstance(epoch, str) else epoch
        raise _since_error(f"epoch: expected the string of 1 to {_MAX_EPOCH} characters a message carried, "
                           f"got {shown!r}")
    value: object = offset
    if isinstance(offset, str):
        value = int(offset) if offset.isdigit() and len(offset) <= 16 and offset.isascii() else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OFFSET:
        shown = offset[:_MAX_PARAMETER] if isinstance(offset, str) else offset
        raise _since_error(f"offset: expected an integer from 0 to {MAX_OFFSET}, got {shown!r}")
    return Since(epoch, value)


@attrs.frozen
class StreamKey:
    """A stream: its channel and, where the channel has one, its key."""

    channel: Channel
    key: str | None = None

    @property
    def key_field(self) -> str | None:
        """The envelope field that carries the key (``market_id`` / ``user_address``)."""
        if self.channel is Channel.POSITIONS:
            return "user_address"
        if self.channel in (Channel.PRICES, Channel.MARKET_STATS):
            return "market_id"
        return None

    @property
    def topic(self) -> str:
        """The registry topic of this stream's snapshots (conflated)."""
        return self.channel.value if self.key is None else f"{self.channel.value}/{self.key}"

    @property
    def events_topic(self) -> str:
        """The registry topic of this stream's events (queued, never dropped silently)."""
        return f"{self.topic}/events"

    @property
    def name(self) -> str:
        """How acks and errors name the subscription: ``prices:btc-usdc-perp``."""
        return self.channel.value if self.key is None else f"{self.channel.value}:{self.key}"

    @classmethod
    def parse(cls, channel: str, params: dict[str, object], markets: Collection[str]) -> StreamKey:
        """Validate a channel name and its parameters (from a path or a subscribe message)."""
        try:
            kind = Channel(channel)
        except ValueError:
            kind = None
        if kind is None or kind is Channel.SYSTEM:
            raise BadStreamParameter(
                "unknown_channel", f"unknown channel: {str(channel)[:_MAX_PARAMETER]!r}",
                CloseCode.INVALID_PARAMETER,
            )
        if kind is Channel.LIQUIDATIONS:
            return cls(kind)
        field = "user_address" if kind is Channel.POSITIONS else "market_id"
        value = params.get(field)
        if not isinstance(value, str):
            raise BadStreamParameter(
                "missing_parameter", f"channel {kind.value!r} needs {field!r}", CloseCode.INVALID_PARAMETER
            )
        if kind is Channel.POSITIONS:
            return cls(kind, parse_address(value))
        return cls(kind, parse_market_id(value, markets))
