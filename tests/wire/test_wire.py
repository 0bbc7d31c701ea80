"""Byte-level cases from RFC 9112 (HTTP/1.1) and RFC 6455 (WebSocket) against the real daemon.

Each case writes raw bytes on a plain socket, checks the server's reply
against what the RFCs (or, where they leave it open, the daemon's
documented choice) say, and ends with the ``unharmed`` check: the daemon
process alive, ``/healthz`` answering, the control client on a prices
stream still receiving with ``seq`` unbroken, no connection of the case
left, nothing at error level and no contained protocol failure in the log.
``docs/reliability.md`` ("Bytes on the wire") lists every case and its outcome.
"""

from __future__ import annotations

import ssl
import struct

import attrs
import pytest
import trio

from tests.reliability.clients import Listener
from tests.reliability.daemon_process import DaemonProcess
from tests.wire.exchange import Reply, client_frame, close_payload, exchange, upgrade
from tests.wire.outcomes import Cut, Gone, Http, Http2, OneOf, Outcome, WsClose

pytestmark = pytest.mark.e2e

TEXT, BINARY, CLOSE, PING, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0x0
MUX = "/api/v1/ws"
UP = upgrade()
MESSAGE_LIMIT = 4 * 65_536  # hypercorn's, set by the daemon to 4 x ws.max_frame_bytes (default 64 KiB)
PING_OP = b'{"op":"ping","id":1}'


def tls_client_hello() -> bytes:
    """A real TLS ClientHello, as this machine's OpenSSL writes it."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def post(headers: bytes, body: bytes = b"") -> bytes:
    return b"POST /api/v1/markets HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n" + body


@attrs.frozen
class Case:
    name: str
    chunks: list[bytes]
    expect: Outcome
    #: Read the handshake's answer before sending the rest (a well-behaved client's order).
    wait_101: bool = False
    #: End with an RST (SO_LINGER 0) right after the last write.
    reset: bool = False
    #: Stop reading once nothing has come for this long (a kept-alive answer is then complete).
    quiet: float = 3.0


def frames_after_upgrade(name: str, *frames: bytes, expect: Outcome) -> Case:
    return Case(name, [UP, *frames], expect, wait_101=True)


# Pipelined: bytes after the upgrade request in the same write, before the 101 (RFC 6455 §4.1
# says a client MUST wait for it). Before the fix any of these killed the daemon.
PIPELINED = [
    Case("pipelined: the word hello after the upgrade (prices path)", [UP + b"hello"],
         OneOf(Http(400), WsClose(1002))),
    Case("pipelined: hello after the upgrade (multiplexed path)", [upgrade(MUX) + b"hello"],
         OneOf(Http(400), WsClose(1002))),
    Case("pipelined: a valid masked frame after the upgrade", [upgrade(MUX) + client_frame(TEXT, PING_OP)],
         OneOf(Http(400), Http(101, closes=False)), quiet=1.0),
    Case("pipelined: a second upgrade request after the first", [UP + UP], OneOf(Http(400), WsClose(1002))),
    Case("pipelined: hello, then a reset", [UP + b"hello"], Gone(), reset=True),
    Case("pipelined: a second upgrade, then a reset (multiplexed path)", [upgrade(MUX) + upgrade(MUX)], Gone(),
         reset=True),
]

HTTP = [
    Case("request line without a version (HTTP/0.9 style)", [b"GET /\r\n\r\n"], Http(400)),
    Case("request line with a fourth field", [b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n"], Http(400)),
    Case("request line that is not HTTP at all", [b"HELLO\r\n\r\n"], Http(400)),
    Case("request line over 16 KiB (200 KB path)", [b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n"], Http(431)),
    Case("one header over 16 KiB (100 KB value)",
         [b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"], Http(431)),
    Case("5,000 headers", [b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(5000))],
         Http(431)),
    Case("whitespace between a header name and its colon (RFC 9112 §5.1)",
         [b"GET /healthz HTTP/1.1\r\nHost : a\r\n\r\n"], Http(400)),
    Case("a NUL byte in a header value", [b"GET /healthz HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"], Http(400)),
    Case("HTTP/1.1 without Host (RFC 9112 §3.2)", [b"GET /healthz HTTP/1.1\r\n\r\n"], Http(400)),
    Case("obs-fold continuation line (RFC 9112 §5.2: unfolded)",
         [b"GET /healthz HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n"], Http(200, closes=False), quiet=0.5),
    Case("two different Content-Length headers (RFC 9112 §6.3)",
         [post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!")], Http(400)),
    Case("a Content-Length list of different values", [post(b"Content-Length: 5, 6\r\n", b"hello!")], Http(400)),
    Case("a negative Content-Length", [post(b"Content-Length: -1\r\n")], Http(400)),
    Case("Content-Length and Transfer-Encoding together (RFC 9112 §6.1: refused, closed)",
         [post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n")], Http(400)),
    Case("an unknown transfer coding", [post(b"Transfer-Encoding: gzip\r\n")], Http(501)),
    Case("a chunk size that is not hex", [post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n")],
         Http(400)),
    Case("a 23-digit chunk size", [post(b"Transfer-Encoding: chunked\r\n", b"f" * 23 + b"\r\nhello\r\n")],
         Http(400)),
    Case("a chunk longer than its size", [post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX\r\n0\r\n\r\n")],
         Http(400)),
    Case("the HTTP/2 connection preface (prior knowledge, RFC 9113 §3.4)",
         [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"], Http2(), quiet=0.5),
    Case("a TLS ClientHello on the plain port", [tls_client_hello()], Http(400)),
]

HANDSHAKE = [
    Case("Sec-WebSocket-Version 8 (RFC 6455 §4.2.2)", [upgrade(version=b"8")], Http(400)),
    Case("no Sec-WebSocket-Key", [upgrade(key=None)], Http(400)),
    Case("a Sec-WebSocket-Key that is not 16 bytes in base64 (RFC 6455 §4.2.1)", [upgrade(key=b"abc")], Http(400)),
    Case("a Sec-WebSocket-Key of 15 bytes", [upgrade(key=b"YWJjZGVmZ2hpamtsbW5v")], Http(400)),
    Case("two Sec-WebSocket-Key headers", [upgrade(extra=b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n")],
         Http(400)),
    Case("an upgrade over HTTP/1.0", [UP.replace(b"HTTP/1.1", b"HTTP/1.0")], Http(400)),
]

FRAMES = [
    frames_after_upgrade("an unmasked client frame (§5.1)", client_frame(TEXT, PING_OP, masked=False),
                         expect=WsClose(1002)),
    frames_after_upgrade("reserved data opcode 0x3 (§5.2)", client_frame(0x3, b"x"), expect=WsClose(1002)),
    frames_after_upgrade("reserved control opcode 0xB", client_frame(0xB, b"x"), expect=WsClose(1002)),
    frames_after_upgrade("RSV1 set without an extension", client_frame(TEXT, PING_OP, rsv=4), expect=WsClose(1002)),
    frames_after_upgrade("RSV3 set", client_frame(TEXT, PING_OP, rsv=1), expect=WsClose(1002)),
    frames_after_upgrade("a fragmented ping (§5.5)", client_frame(PING, b"x", fin=False), expect=WsClose(1002)),
    frames_after_upgrade("a ping of 126 bytes (§5.5: at most 125)", client_frame(PING, b"x" * 126),
                         expect=WsClose(1002)),
    frames_after_upgrade("a 64-bit length with its top bit set (2^63)", client_frame(BINARY, length=1 << 63),
                         expect=WsClose(1002)),
    frames_after_upgrade("a continuation with nothing to continue", client_frame(CONTINUATION, b"x"),
                         expect=WsClose(1002)),
    frames_after_upgrade("a new text frame inside a fragmented message",
                         client_frame(TEXT, b"{", fin=False), client_frame(TEXT, b"}"), expect=WsClose(1002)),
    frames_after_upgrade("invalid UTF-8 in a text frame (§8.1)", client_frame(TEXT, b"\xff\xfe"),
                         expect=WsClose(1007)),
    frames_after_upgrade("UTF-8 broken across fragments", client_frame(TEXT, b"\xe2\x82", fin=False),
                         client_frame(CONTINUATION, b"\x28"), expect=WsClose(1007)),
    # Just past the limit, so the server has read it all when it closes (unread bytes would turn its FIN into an RST).
    frames_after_upgrade("a text frame one byte past the server's message limit (256 KiB here)",
                         client_frame(TEXT, b"a" * (MESSAGE_LIMIT + 1)), expect=WsClose(1009)),
    frames_after_upgrade("a 2^63-1 length and no payload: cut once silent (2 s here)",
                         client_frame(BINARY, length=(1 << 63) - 1), expect=Cut()),
    *[frames_after_upgrade(f"close code {code} (§7.4)", client_frame(CLOSE, close_payload(code)),
                           expect=WsClose(1002)) for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000)],
    frames_after_upgrade("a close payload of one byte (§5.5.1)", client_frame(CLOSE, b"\x03"), expect=WsClose(1002)),
    frames_after_upgrade("a close reason in invalid UTF-8", client_frame(CLOSE, close_payload(1000, b"\xff")),
                         expect=WsClose(1007)),
    frames_after_upgrade("a normal close (1000) is answered with 1000", client_frame(CLOSE, close_payload(1000)),
                         expect=WsClose(1000)),
    frames_after_upgrade("an application close code (4000) is echoed", client_frame(CLOSE, close_payload(4000)),
                         expect=WsClose(4000)),
]

RESETS = [
    Case("reset in the middle of the request line", [b"GET /api/v1/ws/pri"], Gone(), reset=True),
    Case("reset after the upgrade request, before the 101", [UP], Gone(), reset=True),
    Case("reset right after the 101", [UP, b""], Gone(), wait_101=True, reset=True),
    Case("reset in the middle of a frame", [UP, client_frame(TEXT, PING_OP)[:5]], Gone(), wait_101=True, reset=True),
    Case("reset after a close frame, before the server's answer", [UP, client_frame(CLOSE, close_payload(1000))],
         Gone(), wait_101=True, reset=True),
    Case("reset in the middle of a request body", [post(b"Content-Length: 100\r\n", b"0123456789")], Gone(),
         reset=True),
    Case("reset after a kept-alive request", [b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"], Gone(), reset=True),
]

CASES = PIPELINED + HTTP + HANDSHAKE + FRAMES + RESETS


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_wire_case(case: Case, daemon: DaemonProcess, unharmed: Listener) -> None:
    reply: Reply = await trio.to_thread.run_sync(
        lambda: exchange(daemon.port, case.chunks, wait_101=case.wait_101, reset=case.reset, quiet=case.quiet)
    )
    assert case.expect.holds(reply), f"expected {case.expect}, got {reply.ended}: {reply.data[:300]!r}"


async def test_a_valid_frame_after_the_101_is_served(daemon: DaemonProcess, unharmed: Listener) -> None:
    """The frame helpers themselves: a ping op gets its pong (so a 1002 above is the frame's fault)."""
    reply = await trio.to_thread.run_sync(
        lambda: exchange(daemon.port, [upgrade(MUX), client_frame(TEXT, PING_OP)], wait_101=True, quiet=1.0)
    )
    assert reply.status == 101
    assert any(op == TEXT and b'"pong"' in payload for op, payload in reply.frames()), reply.frames()


def test_frame_lengths_use_the_64_bit_form() -> None:
    assert client_frame(BINARY, length=1 << 63)[:10] == b"\x82\xff" + struct.pack("!Q", 1 << 63)
