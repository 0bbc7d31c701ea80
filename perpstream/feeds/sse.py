"""An incremental parser for server-sent events (the WHATWG ``text/event-stream`` format).

Pure protocol, no I/O: bytes go in as the network delivers them, complete
events come out. Chunk boundaries may fall anywhere — inside a line, between
the CR and LF of a CRLF, or inside a multi-byte UTF-8 character — and the
result is the same as if the stream had arrived in one piece.
"""

from __future__ import annotations

import codecs
import re

import attrs

__all__ = ["SSEEvent", "SSEParser", "SSEProtocolError"]

_LINE_END = re.compile(r"[\r\n]")
_DIGITS = re.compile(r"[0-9]+")
DEFAULT_MAX_EVENT_CHARS = 4 * 1024 * 1024


class SSEProtocolError(Exception):
    """The stream cannot be an event stream we are willing to buffer."""


@attrs.frozen
class SSEEvent:
    """One dispatched event: its type (``message`` unless named), data and last event id."""

    event: str
    data: str
    last_event_id: str


class SSEParser:
    """Turns event-stream bytes into ``SSEEvent``s, following the WHATWG rules.

    Comments (``:`` lines, used for keep-alives) are consumed silently; an
    event with no ``data`` field is not dispatched; ``retry`` updates
    ``retry_ms``; an event cut off by the end of the stream is never
    dispatched, because nothing is fed for it after its last line.
    ``max_event_chars`` bounds the memory one unterminated line or event may
    take, so a misbehaving server cannot grow it without limit.
    """

    def __init__(self, *, max_event_chars: int = DEFAULT_MAX_EVENT_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max_event_chars = max_event_chars
        self._pending = ""
        self._skip_leading_lf = False
        self._at_stream_start = True
        self._event_type = ""
        self._data_lines: list[str] = []
        self._data_chars = 0
        self._last_event_id_buffer = ""
        self.last_event_id = ""
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume the next bytes of the stream; return the events they complete."""
        text = self._decoder.decode(chunk)
        if self._at_stream_start and text:
            self._at_stream_start = False
            text = text.removeprefix("\ufeff")
        if self._skip_leading_lf and text:
            self._skip_leading_lf = False
            text = text.removeprefix("\n")
        text = self._pending + text
        events: list[SSEEvent] = []
        position = 0
        while (match := _LINE_END.search(text, position)) is not None:
            line = text[position : match.start()]
            position = match.end()
            if match.group() == "\r":
                if position == len(text):
                    self._skip_leading_lf = True  # the LF of a CRLF may be in the next chunk
                elif text[position] == "\n":
                    position += 1
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        self._pending = text[position:]
        if len(self._pending) > self._max_event_chars:
            raise SSEProtocolError(f"line longer than {self._max_event_chars} characters")
        return events

    def _process_line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data_lines.append(value)
            self._data_chars += len(value) + 1
            if self._data_chars > self._max_event_chars:
                raise SSEProtocolError(f"event data longer than {self._max_event_chars} characters")
        elif field == "event":
            self._event_type = value
        elif field == "id":
            if "\0" not in value:
                self._last_event_id_buffer = value
        elif field == "retry" and _DIGITS.fullmatch(value):
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        self.last_event_id = self._last_event_id_buffer
        data_lines, event_type = self._data_lines, self._event_type
        self._data_lines, self._data_chars, self._event_type = [], 0, ""
        if not data_lines:
            return None
        return SSEEvent(
            event=event_type or "message",
            data="\n".join(data_lines),
            last_event_id=self.last_event_id,
        )
