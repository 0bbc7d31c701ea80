"""ABI decoding of the exchange's logs into typed events.

Decoding goes through eth_abi (the codec web3 itself uses) driven by the
contract's ABI: topic 0 selects the event, indexed parameters come from the
other topics and the rest from the data. A log that does not fit — a foreign
event, a wrong topic count, short or malformed data — raises
:class:`LogDecodeError` so the indexer can report and skip it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

import attrs
import eth_abi
from eth_abi.exceptions import DecodingError
from eth_utils import event_abi_to_log_topic, to_checksum_address

from perpstream.chain.client import RawLog
from perpstream.chain.events import (
    ChainEvent,
    EventMeta,
    FundingUpdated,
    PositionClosed,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
)
from perpstream.chain.units import bytes32_to_market_id, from_wad

__all__ = ["EventDecoder", "LogDecodeError"]


class LogDecodeError(ValueError):
    """A log that is not one of the exchange's events, or is malformed."""


def _bytes32_hex(raw: bytes) -> str:
    return "0x" + raw.hex()


# EIP-55 costs a keccak per address; the same few accounts recur in every batch.
_checksum = lru_cache(maxsize=65536)(to_checksum_address)


# ABI parameter name -> (event field name, conversion of the ABI-decoded value)
_FIELDS: Mapping[str, tuple[str, Callable[[Any], Any]]] = {
    "positionId": ("position_id", _bytes32_hex),
    "account": ("account", _checksum),
    "liquidator": ("liquidator", _checksum),
    "marketId": ("market_id", bytes32_to_market_id),
    "isLong": ("is_long", bool),
    "size": ("size", from_wad),
    "collateral": ("collateral", from_wad),
    "entryPrice": ("entry_price", from_wad),
    "entryFundingIndex": ("entry_funding_index", from_wad),
    "exitPrice": ("exit_price", from_wad),
    "realizedPnl": ("realized_pnl", from_wad),
    "price": ("price", from_wad),
    "reward": ("reward", from_wad),
    "fundingRatePerHour": ("funding_rate_per_hour", from_wad),
    "fundingIndex": ("funding_index", from_wad),
    "timestamp": ("timestamp", int),
}

_EVENT_TYPES: Mapping[str, type[ChainEvent]] = {
    cls.__name__: cls
    for cls in (PositionOpened, PositionModified, PositionClosed, PositionLiquidated, FundingUpdated)
}


@attrs.frozen
class _EventSpec:
    name: str
    event_type: type[ChainEvent]
    indexed: tuple[tuple[str, str], ...]  # (abi name, abi type), in topic order
    data: tuple[tuple[str, str], ...]


class EventDecoder:
    """Decodes the exchange's logs; built from the contract ABI."""

    def __init__(self, abi: Iterable[Mapping[str, Any]]) -> None:
        self._specs: dict[bytes, _EventSpec] = {}
        for entry in abi:
            if entry.get("type") != "event" or entry["name"] not in _EVENT_TYPES:
                continue
            inputs = entry["inputs"]
            unknown = [i["name"] for i in inputs if i["name"] not in _FIELDS]
            if unknown:
                raise ValueError(f"event {entry['name']} has unmapped parameters {unknown}")
            topic = event_abi_to_log_topic(dict(entry))  # type: ignore[arg-type]
            self._specs[topic] = _EventSpec(
                name=entry["name"],
                event_type=_EVENT_TYPES[entry["name"]],
                indexed=tuple((i["name"], i["type"]) for i in inputs if i["indexed"]),
                data=tuple((i["name"], i["type"]) for i in inputs if not i["indexed"]),
            )
        missing = set(_EVENT_TYPES) - {s.name for s in self._specs.values()}
        if missing:
            raise ValueError(f"ABI lacks the events {sorted(missing)}")

    @property
    def topics(self) -> tuple[bytes, ...]:
        """Topic 0 of every event this decoder knows."""
        return tuple(self._specs)

    def decode(self, log: RawLog) -> ChainEvent:
        if not log.topics:
            raise LogDecodeError("anonymous log (no topics)")
        spec = self._specs.get(log.topics[0])
        if spec is None:
            raise LogDecodeError(f"unknown event topic 0x{log.topics[0].hex()}")
        if len(log.topics) != 1 + len(spec.indexed):
            raise LogDecodeError(
                f"{spec.name}: expected {1 + len(spec.indexed)} topics, got {len(log.topics)}"
            )
        values: dict[str, Any] = {}
        try:
            for (name, abi_type), topic in zip(spec.indexed, log.topics[1:]):
                (values[name],) = eth_abi.decode([abi_type], topic)
            decoded = eth_abi.decode([t for _, t in spec.data], log.data)
            values.update(zip((n for n, _ in spec.data), decoded))
            fields = {_FIELDS[name][0]: _FIELDS[name][1](value) for name, value in values.items()}
        except (DecodingError, ValueError) as exc:
            raise LogDecodeError(f"{spec.name}: {exc}") from exc
        meta = EventMeta(
            block_number=log.block_number,
            block_hash=log.block_hash,
            tx_hash=log.tx_hash,
            log_index=log.log_index,
        )
        return spec.event_type(meta=meta, **fields)
