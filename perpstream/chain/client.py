"""The chain as the indexer sees it: a small protocol with two implementations.

``JsonRpcChainClient`` talks to a real node over HTTP; ``EmbeddedChainClient``
talks to the in-process dev chain. Both return the plain types below and
raise the same three kinds of error, so the indexer cannot tell them apart.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, TypeAlias

import attrs

__all__ = [
    "BlockHeader",
    "RawLog",
    "TopicFilter",
    "encode_topic_filter",
    "ChainClient",
    "ChainError",
    "RangeHint",
    "RangeTooLargeError",
    "TransientChainError",
    "FatalChainError",
]


@attrs.frozen
class BlockHeader:
    number: int
    hash: str  # 0x-hex, lower case
    parent_hash: str
    timestamp: int


@attrs.frozen
class RawLog:
    """A log as eth_getLogs returns it, before ABI decoding."""

    address: str  # EIP-55
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    block_hash: str  # 0x-hex, lower case
    tx_hash: str
    log_index: int


#: eth_getLogs topics: per position, one topic, any of several, or any at all.
TopicFilter: TypeAlias = Sequence[Sequence[bytes] | bytes | None]


def encode_topic_filter(topics: TopicFilter) -> list[Any]:
    """``topics`` as eth_getLogs takes them: 0x-hex strings, lists of them, nulls."""

    def one(topic: Sequence[bytes] | bytes | None) -> Any:
        if topic is None:
            return None
        if isinstance(topic, bytes):
            return "0x" + topic.hex()
        return ["0x" + t.hex() for t in topic]

    return [one(t) for t in topics]


class ChainError(Exception):
    """A chain request failed."""


@attrs.frozen
class RangeHint:
    """What a range refusal said would work: a span limit, a range to retry with."""

    span_limit: int | None = None  # blocks per request the provider serves at most
    suggested: tuple[int, int] | None = None  # (from, to) the provider says it would serve
    #: The refusal is about the span itself (not the number of results), whether
    #: or not it says the number: a span refused once is refused every time.
    span_limited: bool = False


class RangeTooLargeError(ChainError):
    """The node refused an eth_getLogs block range (too many results or too wide)."""

    def __init__(self, message: str, *, hint: RangeHint = RangeHint()) -> None:
        super().__init__(message)
        self.hint = hint


class TransientChainError(ChainError):
    """A failure worth retrying: timeout, connection error, 5xx, rate limit."""


class FatalChainError(ChainError):
    """A failure retrying will not fix: bad request, unauthorized, unknown method."""


class ChainClient(Protocol):
    async def chain_id(self) -> int: ...

    async def block_number(self) -> int: ...

    async def get_block_header(self, number: int) -> BlockHeader | None:
        """The canonical block at ``number``, or None above the head."""
        ...

    async def get_logs(
        self,
        from_block: int,
        to_block: int,
        address: str,
        topics: TopicFilter | None = None,
    ) -> list[RawLog]:
        """Logs of ``address`` in ``[from_block, to_block]``, in chain order."""
        ...
