"""Hermes v2 wire shapes for tests: parsed entries, payloads and SSE framing.

Byte for byte what the server sends: serde serialises the structs of
``apps/hermes/server/src/api/types.rs`` in field order, compactly, and
axum's ``response/sse.rs`` frames an event as ``data:`` + the JSON + ``\\n``
(an ``event:`` line first only for errors), then a blank line.
"""

from __future__ import annotations

import json
from typing import Any

BTC = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"
ETH = "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace"
SOL = "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d"
KEEP_ALIVE = b":\n\n"  # axum's KeepAlive::default(): an empty comment after 15 s without an event
BLOB = "504e4155010000000000"  # stands in for binary.data where a test does not look at it


def entry(
    feed_id: str,
    price: int,
    publish_time: int,
    *,
    slot: int | None = None,
    conf: int = 3_100_000,
    expo: int = -8,
) -> dict[str, Any]:
    """One element of ``parsed``, shaped exactly as Hermes sends it.

    ``slot`` defaults to one derived from ``publish_time``, so updates of
    different seconds are ordered as their times are.
    """
    return {
        "id": feed_id,
        "price": {"price": str(price), "conf": str(conf), "expo": expo, "publish_time": publish_time},
        "ema_price": {"price": str(price - 1000), "conf": str(conf + 7), "expo": expo, "publish_time": publish_time},
        "metadata": {
            "slot": 180_000_000 + (publish_time % 100_000) * 3 if slot is None else slot,
            "proof_available_time": publish_time + 1,
            "prev_publish_time": publish_time - 1,
        },
    }


def payload(*entries: dict[str, Any], blobs: tuple[str, ...] = (BLOB,)) -> str:
    """A full update document: the binary part plus ``parsed``, compact as serde_json writes it."""
    return json.dumps(
        {"binary": {"encoding": "hex", "data": list(blobs)}, "parsed": list(entries)},
        separators=(",", ":"),
    )


def sse(data: str, *, event: str | None = None) -> bytes:
    """One server-sent event, framed the way axum frames it: no space after the colon."""
    lines = [] if event is None else [f"event:{event}"]
    lines += [f"data:{line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def error_event(message: str) -> bytes:
    """An ``event:error`` as Hermes sends it (``Error receiving update: Lagged(3)``, the 24 h close)."""
    return sse(message, event="error")
