"""Decoding Hermes v2 price-update JSON into ``PriceUpdate``s.

Pure, no I/O. The stream's ``data:`` payloads and the ``/v2/updates/price/latest``
response share one shape::

    {"binary": {"encoding": "hex", "data": ["..."]},
     "parsed": [{"id": "<64 hex, no 0x>",
                 "price": {"price": "6501234000000", "conf": "3100000", "expo": -8,
                           "publish_time": 1717632000},
                 "ema_price": {...same...},
                 "metadata": {"slot": ..., "proof_available_time": ..., "prev_publish_time": ...}}]}

``price`` and ``conf`` are decimal integers sent as strings (they can exceed
the exact range of a JSON double); ``expo`` and ``publish_time`` are numbers;
``metadata.slot`` is a number or ``null``. ``binary.data`` is one signed
update (hex or base64, as ``binary.encoding`` says) covering every feed of
the payload, so each update carries all of it as its ``update_data``: that
is what a liquidator submits on chain to prove the very price it acted on.
One bad entry must not cost the others, so entry-level problems are
reported next to the good updates, and an unreadable ``binary`` costs only
the update data; only a payload that is not this shape at all raises.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection
from typing import Any

import attrs

from perpstream.domain.prices import PriceUpdate, PythPrice, normalize_feed_id

__all__ = ["HERMES_SOURCE", "HermesBatch", "HermesPayloadError", "decode_hermes_payload"]

HERMES_SOURCE = "pyth-hermes"
_INTEGER_TEXT = re.compile(r"-?[0-9]+")


class HermesPayloadError(ValueError):
    """A payload, or one entry of it, is not a Hermes price update.

    ``index`` is the position of the offending entry in ``parsed``, or
    ``None`` when the payload as a whole is unusable.
    """

    def __init__(self, reason: str, *, index: int | None = None) -> None:
        where = "payload" if index is None else f"parsed[{index}]"
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.index = index


@attrs.frozen
class HermesBatch:
    """What one payload yields: updates for the configured feeds and what was left out."""

    updates: tuple[PriceUpdate, ...]
    unknown_feed_ids: tuple[str, ...]  # well-formed entries for feeds nobody asked for
    malformed: tuple[HermesPayloadError, ...]  # entries that could not be decoded
    binary_error: HermesPayloadError | None = None  # why the updates carry no update_data


def decode_hermes_payload(payload: str | bytes, known_feed_ids: Collection[str]) -> HermesBatch:
    """Decode one Hermes JSON payload.

    ``known_feed_ids`` are the canonical ids (see ``normalize_feed_id``) the
    caller configured; entries for any other id are reported, not returned.
    Raises ``HermesPayloadError`` when the payload is not JSON or has no
    ``parsed`` list (the stream must be requested with ``parsed=true``).
    """
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: nested deeper than the interpreter allows; that is
        # malformed input, not a reason for the feed to fail.
        raise HermesPayloadError(f"not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise HermesPayloadError("expected a JSON object")
    entries = document.get("parsed")
    if not isinstance(entries, list):
        raise HermesPayloadError("no 'parsed' list (was parsed=true requested?)")

    updates: list[PriceUpdate] = []
    unknown: list[str] = []
    malformed: list[HermesPayloadError] = []
    binary_error: HermesPayloadError | None = None
    try:
        update_data = _decode_binary(document.get("binary"))
    except HermesPayloadError as exc:
        binary_error, update_data = exc, ()
    for index, entry in enumerate(entries):
        try:
            update = _decode_entry(entry, update_data)
        except HermesPayloadError as exc:
            malformed.append(HermesPayloadError(exc.reason, index=index))
            continue
        if update.feed_id in known_feed_ids:
            updates.append(update)
        else:
            unknown.append(update.feed_id)
    return HermesBatch(tuple(updates), tuple(unknown), tuple(malformed), binary_error)


def _decode_binary(binary: Any) -> tuple[bytes, ...]:
    """``binary.data`` as bytes; an absent ``binary`` is no data, not an error."""
    if binary is None:
        return ()
    if not isinstance(binary, dict) or not isinstance(binary.get("data"), list):
        raise HermesPayloadError("'binary' is not an object with a 'data' list")
    encoding = binary.get("encoding", "hex")
    blobs: list[bytes] = []
    for index, text in enumerate(binary["data"]):
        if not isinstance(text, str):
            raise HermesPayloadError(f"binary.data[{index}] is not a string")
        try:
            if encoding == "hex":
                blobs.append(bytes.fromhex(text.removeprefix("0x")))
            elif encoding == "base64":
                blobs.append(base64.b64decode(text, validate=True))
            else:
                raise HermesPayloadError(f"binary.encoding {encoding!r:.40} is not 'hex' or 'base64'")
        except (ValueError, binascii.Error):
            raise HermesPayloadError(f"binary.data[{index}] is not valid {encoding}") from None
    return tuple(blobs)


def _decode_slot(metadata: Any) -> int | None:
    """``metadata.slot``: the Pythnet slot of the price, or None when Hermes does not say."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise HermesPayloadError("'metadata' is not an object")
    slot = metadata.get("slot")
    if slot is None:
        return None
    slot = _json_integer(slot, "metadata.slot")
    if slot < 0:
        raise HermesPayloadError("metadata.slot is negative")
    return slot


def _decode_entry(entry: Any, update_data: tuple[bytes, ...]) -> PriceUpdate:
    if not isinstance(entry, dict):
        raise HermesPayloadError("expected an object")
    raw_id = entry.get("id")
    if not isinstance(raw_id, str):
        raise HermesPayloadError("'id' missing or not a string")
    try:
        feed_id = normalize_feed_id(raw_id)
    except ValueError as exc:
        raise HermesPayloadError(str(exc)) from None
    return PriceUpdate(
        feed_id=feed_id,
        price=_decode_price(entry.get("price"), "price"),
        ema_price=_decode_price(entry.get("ema_price"), "ema_price"),
        source=HERMES_SOURCE,
        slot=_decode_slot(entry.get("metadata")),
        update_data=update_data,
    )


def _decode_price(value: Any, name: str) -> PythPrice:
    if not isinstance(value, dict):
        raise HermesPayloadError(f"'{name}' missing or not an object")
    conf = _integer_text(value.get("conf"), f"{name}.conf")
    if conf < 0:
        raise HermesPayloadError(f"{name}.conf is negative")
    publish_time = _json_integer(value.get("publish_time"), f"{name}.publish_time")
    if publish_time < 0:
        raise HermesPayloadError(f"{name}.publish_time is negative")
    return PythPrice(
        price=_integer_text(value.get("price"), f"{name}.price"),
        conf=conf,
        expo=_json_integer(value.get("expo"), f"{name}.expo"),
        publish_time=publish_time,
    )


def _integer_text(value: Any, name: str) -> int:
    """An integer Hermes sends as a decimal string; a plain JSON integer is accepted too."""
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise HermesPayloadError(f"{name} is not an integer: {value!r:.80}")


def _json_integer(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise HermesPayloadError(f"{name} is not an integer: {value!r:.80}")
