"""Client → server messages: parsing and validation, no I/O.

Every way a frame can be wrong maps to an ``error`` the client can read;
whether the connection survives it is the connection's decision (docs/websocket.md:
unknown ops are answered and forgiven, malformed input counts towards a
close 1008).
"""

from __future__ import annotations

import json
from collections.abc import Collection

import attrs

from perpstream.protocol import CloseCode
from perpstream.streams import BadStreamParameter, Since, StreamKey, parse_since

__all__ = [
    "ClientMessageError",
    "Ping",
    "Subscribe",
    "Unsubscribe",
    "parse_client_message",
]

RequestId = int | str | None


@attrs.frozen
class Ping:
    id: RequestId = None


@attrs.frozen
class Subscribe:
    id: RequestId
    stream: StreamKey
    #: Resume after this position instead of starting from the snapshot.
    since: Since | None = None


@attrs.frozen
class Unsubscribe:
    id: RequestId
    stream: StreamKey


ClientMessage = Ping | Subscribe | Unsubscribe


class ClientMessageError(ValueError):
    """A frame the server answers with ``error``.

    ``malformed`` frames (not JSON, binary, too large) count towards the
    close-after-N rule; a well-formed request the server cannot honour does not.
    """

    def __init__(self, code: str, message: str, *, malformed: bool, id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.malformed = malformed
        self.id = id


def _request_id(data: dict[str, object]) -> RequestId:
    value = data.get("id")
    if value is None or (isinstance(value, (int, str)) and not isinstance(value, bool)):
        return value
    return None


def _since(data: dict[str, object]) -> Since | None:
    """``"since": {"epoch": E, "offset": N}``, if given."""
    if "since" not in data or data["since"] is None:
        return None
    since = data["since"]
    if not isinstance(since, dict):
        raise BadStreamParameter("invalid_since", f"since: expected {{\"epoch\": ..., \"offset\": ...}}, got "
                                 f"{json.dumps(since)[:64]}", CloseCode.INVALID_PARAMETER)
    return parse_since(since.get("epoch"), since.get("offset"))


def parse_client_message(
    frame: str | bytes | None,
    *,
    max_bytes: int,
    markets: Collection[str],
    multiplexed: bool,
) -> ClientMessage:
    """Parse one frame; raise :class:`ClientMessageError` on anything wrong."""
    if not isinstance(frame, str):  # bytes, or None for an empty binary frame
        raise ClientMessageError("binary_frame", "binary frames are not supported; send JSON text", malformed=True)
    if len(frame) > max_bytes or len(frame.encode("utf-8")) > max_bytes:
        raise ClientMessageError("frame_too_large", f"frames are limited to {max_bytes} bytes", malformed=True)
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError):  # JSONDecodeError, and integers past the digit limit
        raise ClientMessageError("malformed_json", "frame is not valid JSON", malformed=True) from None
    if not isinstance(data, dict):
        raise ClientMessageError("malformed_message", "expected a JSON object", malformed=True)
    request_id = _request_id(data)
    op = data.get("op")
    if op == "ping":
        return Ping(request_id)
    if op in ("subscribe", "unsubscribe"):
        if not multiplexed:
            raise ClientMessageError(
                "unsupported_op", f"{op!r} is only available on /api/v1/ws", malformed=False, id=request_id
            )
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise ClientMessageError("missing_channel", "subscribe needs a 'channel'", malformed=False, id=request_id)
        try:
            stream = StreamKey.parse(channel, data, markets)
            since = _since(data) if op == "subscribe" else None
        except BadStreamParameter as exc:
            raise ClientMessageError(exc.code, exc.message, malformed=False, id=request_id) from None
        return Subscribe(request_id, stream, since) if op == "subscribe" else Unsubscribe(request_id, stream)
    shown = op if isinstance(op, str) else json.dumps(op)
    raise ClientMessageError("unknown_op", f"unknown op: {shown[:64]!r}", malformed=False, id=request_id)
