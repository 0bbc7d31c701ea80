"""One exchange of raw bytes with the server, and what came back.

A blocking socket (driven from a worker thread by the tests): write the
client's bytes exactly as given, in one write or several, then read until
the server closes, resets, or goes quiet. :class:`Reply` splits what was
read into an HTTP response head, and, after a ``101``, the server's
WebSocket frames, so a test can say "HTTP 400, then closed" or "101, then
close 1002" in one line.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence

import attrs

def upgrade(path: str = "/api/v1/ws/prices/btc-usdc-perp", *, host: str = "127.0.0.1",
            version: bytes = b"13", key: bytes | None = b"dGhlIHNhbXBsZSBub25jZQ==",
            extra: bytes = b"") -> bytes:
    """An opening handshake (RFC 6455 §4.1, with the RFC's own sample nonce) for ``path``;
    ``version``, ``key`` (None: no key header) and ``extra`` header lines break it on purpose."""
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: " + host.encode(), b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Version: " + version]
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True,
                 length: int | None = None) -> bytes:
    """A client frame (RFC 6455 §5.2), possibly broken on purpose.

    ``rsv`` sets the RSV1-3 bits (0-7), ``masked=False`` omits the mask,
    ``length`` claims a payload length other than the real one (any value up
    to 2**64-1, so the 64-bit form's forbidden top bit can be set).
    """
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    claimed = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if claimed < 126:
        header = struct.pack("!BB", first, mask_bit | claimed)
    elif claimed < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, claimed)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, claimed)
    if not masked:
        return header + payload
    mask = b"\x37\xfa\x21\x3d"
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@attrs.frozen
class Reply:
    """Everything the server sent on one connection, and how the connection ended."""

    data: bytes
    ended: str  # "closed" (FIN), "reset" (RST), or "open" (still open when we stopped waiting)

    @property
    def status(self) -> int | None:
        """The HTTP status of the first response, if the server sent one."""
        if not self.data.startswith(b"HTTP/1.1 "):
            return None
        return int(self.data[9:12])

    @property
    def head(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[0]

    def frames(self) -> list[tuple[int, bytes]]:
        """The server's WebSocket frames after a 101: (opcode, payload) each."""
        rest = self.data.partition(b"\r\n\r\n")[2]
        frames = []
        while len(rest) >= 2:
            length, offset = rest[1] & 0x7F, 2
            if length == 126:
                length, offset = int.from_bytes(rest[2:4], "big"), 4
            elif length == 127:
                length, offset = int.from_bytes(rest[2:10], "big"), 10
            if len(rest) < offset + length:
                break
            frames.append((rest[0] & 0x0F, rest[offset: offset + length]))
            rest = rest[offset + length:]
        return frames

    @property
    def close_code(self) -> int | None:
        """The code of the server's close frame, if it sent one."""
        for opcode, payload in self.frames():
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        return None


def exchange(port: int, chunks: Sequence[bytes] | bytes, *, quiet: float = 3.0, wait_101: bool = False,
             reset: bool = False, total: float = 20.0) -> Reply:
    """Send ``chunks`` (each one write), read until the server ends the connection.

    ``wait_101``: read the handshake's answer after the first chunk before
    sending the rest (a well-behaved client's order). ``reset``: end with an
    RST (SO_LINGER 0) right after the last write instead of reading.
    ``quiet``: stop waiting once nothing has arrived for this long (the
    reply's ``ended`` is then "open"). A close frame from the server is
    answered with a close (1000), as a client must.
    """
    parts = [chunks] if isinstance(chunks, bytes) else list(chunks)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    received = b""
    try:
        for index, part in enumerate(parts):
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server already closed; what it said is read below
            if index == 0 and wait_101:
                while b"\r\n\r\n" not in received:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return Reply(received, "reset")
        sock.settimeout(quiet)
        deadline = time.monotonic() + total
        answered = False
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return Reply(received, "open")
            except ConnectionResetError:
                return Reply(received, "reset")
            if not chunk:
                return Reply(received, "closed")
            received += chunk
            if not answered and Reply(received, "open").close_code is not None:
                # Answer the server's close as RFC 6455 §5.5.1 asks, so the server may close the TCP connection.
                answered = True
                try:
                    sock.sendall(client_frame(0x8, close_payload(1000)))
                except OSError:
                    pass
        return Reply(received, "open")
    finally:
        sock.close()
