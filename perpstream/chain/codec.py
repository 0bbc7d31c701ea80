"""JSON encoding of events and records for the indexer's SQLite tables.

Decimals are written as strings, so a round trip is exact; each value is
tagged with its class name so the union types come back as what they were.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Mapping

import cattrs

from perpstream.chain.events import (
    ChainEvent,
    EventMeta,
    FundingUpdated,
    PositionClosed,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    StoredFunding,
    StoredPosition,
    StoredRecord,
)

__all__ = ["dump_event", "load_event", "dump_record", "load_record", "dump_meta", "load_meta"]

_converter = cattrs.Converter()
_converter.register_unstructure_hook(Decimal, str)
_converter.register_structure_hook(Decimal, lambda value, _: Decimal(value))

_TYPES: Mapping[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        PositionOpened,
        PositionModified,
        PositionClosed,
        PositionLiquidated,
        FundingUpdated,
        StoredPosition,
        StoredFunding,
    )
}


def _dump(value: Any) -> str:
    return json.dumps({"type": type(value).__name__, **_converter.unstructure(value)})


def _load(text: str) -> Any:
    data = json.loads(text)
    return _converter.structure(data, _TYPES[data.pop("type")])


def dump_event(event: ChainEvent) -> str:
    return _dump(event)


def load_event(text: str) -> ChainEvent:
    event = _load(text)
    if isinstance(event, (StoredPosition, StoredFunding)):
        raise ValueError(f"not an event: {text}")
    return event  # type: ignore[no-any-return]


def dump_record(record: StoredRecord | None) -> str | None:
    return None if record is None else _dump(record)


def load_record(text: str | None) -> StoredRecord | None:
    if text is None:
        return None
    record = _load(text)
    if not isinstance(record, (StoredPosition, StoredFunding)):
        raise ValueError(f"not a record: {text}")
    return record


def dump_meta(meta: EventMeta | None) -> str:
    """An event's place on chain as compact JSON ("" for none), comparable as text."""
    if meta is None:
        return ""
    return json.dumps([meta.block_number, meta.block_hash, meta.tx_hash, meta.log_index])


def load_meta(text: str) -> EventMeta | None:
    if not text:
        return None
    block_number, block_hash, tx_hash, log_index = json.loads(text)
    return EventMeta(block_number, block_hash, tx_hash, log_index)
