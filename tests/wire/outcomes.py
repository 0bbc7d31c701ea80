"""What a wire case expects of the server's reply (see :class:`tests.wire.exchange.Reply`)."""

from __future__ import annotations

import attrs

from tests.wire.exchange import Reply


@attrs.frozen
class Http:
    """An HTTP answer with ``status``; with ``closes``, the server then closes the connection."""

    status: int
    closes: bool = True

    def holds(self, reply: Reply) -> bool:
        return reply.status == self.status and (not self.closes or reply.ended in ("closed", "reset"))

    def __str__(self) -> str:
        return f"HTTP {self.status}" + (", closed" if self.closes else "")


@attrs.frozen
class WsClose:
    """A 101, then the server's close frame with ``code``, then the connection closed."""

    code: int

    def holds(self, reply: Reply) -> bool:
        return reply.status == 101 and reply.close_code == self.code and reply.ended == "closed"

    def __str__(self) -> str:
        return f"101, then close {self.code}"


@attrs.frozen
class Http2:
    """The server speaks HTTP/2: its first frame is a SETTINGS frame (RFC 9113 §3.4)."""

    def holds(self, reply: Reply) -> bool:
        return len(reply.data) >= 9 and reply.data[3] == 0x04 and reply.data[5:9] == b"\x00\x00\x00\x00"

    def __str__(self) -> str:
        return "HTTP/2 SETTINGS"


@attrs.frozen
class Cut:
    """The server reset the connection (its guard cuts a silent or stuck peer with an RST)."""

    def holds(self, reply: Reply) -> bool:
        return reply.ended == "reset"

    def __str__(self) -> str:
        return "reset by the server"


@attrs.frozen
class Gone:
    """Nothing to read (the client reset the connection itself)."""

    def holds(self, reply: Reply) -> bool:
        return True

    def __str__(self) -> str:
        return "connection gone"


@attrs.frozen
class OneOf:
    """Either outcome (the order of two tasks in the server decides which)."""

    first: Http | WsClose
    second: Http | WsClose

    def holds(self, reply: Reply) -> bool:
        return self.first.holds(reply) or self.second.holds(reply)

    def __str__(self) -> str:
        return f"{self.first} or {self.second}"


Outcome = Http | WsClose | Http2 | Cut | Gone | OneOf
