"""GuardedStream: the one writer of a client's socket, and a fast lane into it.

Every byte to a client goes through this stream: hypercorn's own writes
(handshake, pings, closes) through :meth:`GuardedStream.send_all`, and the
service's data frames through :meth:`try_write` / :meth:`write`. One lock
and one backlog keep them in order, so frames never interleave.

The fast lane exists because the usual path for one small frame (ASGI
message → quart → hypercorn → wsproto → ``send_all`` with its checkpoints)
costs far more than the frame. :meth:`try_write` frames nothing and awaits
nothing: it hands already-framed bytes to the kernel with one non-blocking
``write``. If the kernel takes only part, the rest waits in the backlog and
is sent before anything else, by whichever writer comes next.

The fast lane writes WebSocket frames only between the handshake's 101
(the server says which write is the 101: :meth:`expect_upgrade`) and the
close frame, whichever path sends it (:meth:`write_close`, :meth:`closing`):
no frame ahead of the handshake, none after a close (RFC 6455 §5.5.1).

Stuck sends and silent peers can be cut from outside (:meth:`cut`); see
:mod:`perpstream.web.server`.
"""

from __future__ import annotations

import math
import os
import socket
import struct

import trio

__all__ = ["GuardedStream", "text_frame"]

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, final WebSocket text frame (RFC 6455 §5.2) around ``payload``."""
    length = len(payload)
    if length < 126:
        return _SHORT.pack(0x81, length) + payload
    if length < 65536:
        return _MEDIUM.pack(0x81, 126, length) + payload
    return _LONG.pack(0x81, 127, length) + payload


class GuardedStream(trio.abc.HalfCloseableStream):
    """A socket stream with a non-blocking fast lane, cuttable from outside."""

    __slots__ = (
        "_stream", "socket", "send_blocked_since", "last_receive", "cut_reason", "_lock", "_backlog", "_upgraded",
        "ping_due", "_close_after_writes", "_close_frame", "_upgrading",
    )

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket  # hypercorn reads peer and local addresses from it
        self.send_blocked_since: float | None = None
        self.last_receive = trio.current_time()
        self.cut_reason: str | None = None
        self._lock = trio.Lock()
        self._backlog = b""
        self._upgraded = False
        self._upgrading = False
        self._close_after_writes = False
        #: The close frame, once one is committed (nothing goes out after it);
        #: ``b""`` once it is in the backlog or sent.
        self._close_frame: bytes | None = None
        self.ping_due = math.inf  # when the guard pings it next (it sets this)

    # ------------------------------------------------------------ writing

    @property
    def upgraded(self) -> bool:
        """The WebSocket handshake's 101 response has been written: frames may follow."""
        return self._upgraded

    def expect_upgrade(self) -> None:
        """The next bytes :meth:`send_all` is given are the handshake's 101.

        Once they are written, in the same turn of the lock (so no other
        writer comes between), the stream is upgraded: frames may follow,
        and a close frame committed meanwhile is next in line.
        """
        self._upgrading = True

    def _mark_upgraded(self) -> None:
        self._upgrading = False
        self._upgraded = True
        if self._close_frame:
            self._backlog += self._close_frame
            self._close_frame = b""

    def try_write(self, data: bytes) -> bool:
        """Give ``data`` to the kernel now, without waiting; False: use :meth:`write`.

        True means the bytes are committed in order: sent, or partly sent with
        the rest in the backlog (call :meth:`flush` before relying on them).
        After a close frame nothing more is sent (RFC 6455 §5.5.1): the bytes
        are dropped, as any send after a close is.
        """
        if self._close_frame is not None:
            return True
        return self._write_now(data)

    def _write_now(self, data: bytes) -> bool:
        if self._backlog or self._lock.locked() or self.cut_reason is not None or not self._upgraded:
            return False
        try:
            sent = os.write(self.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False  # the async path reports it properly
        if sent < len(data):
            self._backlog = data[sent:]
        return True

    def write_close(self, frame: bytes) -> None:
        """Commit the close frame ``frame``, without waiting; nothing is sent after it.

        It goes out after everything committed before it: now, with the next
        write, or with :meth:`send_eof`, whichever comes first (and never
        ahead of the 101, if that is still on its way).
        """
        if self._close_frame is not None or self.cut_reason is not None:
            return
        if not self._upgraded:
            self._close_frame = frame
            return
        self._close_frame = b""
        if not self._write_now(frame):
            self._backlog += frame

    def closing(self) -> None:
        """A close frame is on its way by the other path: drop fast-lane frames from now on."""
        if self._close_frame is None:
            self._close_frame = b""

    @property
    def busy(self) -> bool:
        """A send is in progress (it may be stuck: the guard's send timeout watches it)."""
        return self._lock.locked()

    @property
    def backlog(self) -> int:
        """Bytes committed but not yet handed to the kernel."""
        return len(self._backlog)

    async def _send_locked(self, data: bytes | bytearray | memoryview) -> None:
        """Send the backlog, then ``data``; the caller holds the lock.

        Shielded from cancellation, as hypercorn's own sends are: a send
        cancelled halfway would leave half a frame on the wire (and a
        backlog taken but never sent). A send that never finishes is the
        guard's to cut (its send timeout), not a cancellation's.
        """
        self.send_blocked_since = trio.current_time()
        try:
            with trio.CancelScope(shield=True):
                if self._backlog:
                    backlog, self._backlog = self._backlog, b""
                    await self._stream.send_all(backlog)
                if data:
                    await self._stream.send_all(data)
                    if self._upgrading:
                        self._mark_upgraded()
        except trio.ClosedResourceError:
            if self.cut_reason is not None:
                raise trio.BrokenResourceError(self.cut_reason) from None
            raise
        finally:
            self.send_blocked_since = None
            if self._close_after_writes:
                self.cut("closed after its last answer", abort=False)

    async def write(self, data: bytes) -> None:
        """Send ``data`` (a WebSocket frame) after the backlog, waiting for the socket as long as it takes."""
        if not self._upgraded:
            raise trio.BrokenResourceError("no WebSocket frame before the handshake's 101")
        if self._close_frame is not None:
            return  # after the close frame: dropped, see try_write
        async with self._lock:
            await self._send_locked(data)

    async def flush(self) -> None:
        """Send the backlog."""
        async with self._lock:
            await self._send_locked(b"")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            await self._send_locked(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    # ------------------------------------------------------------ reading and closing

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        self.last_receive = trio.current_time()
        return data

    async def send_eof(self) -> None:
        """Send what is committed, then the FIN: in turn with every other writer."""
        async with self._lock:
            await self._send_locked(b"")
            await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    def close_after_writes(self) -> None:
        """Close (with a FIN) once the write in progress, if any, is done; nothing more goes out."""
        if self._lock.locked():
            self._close_after_writes = True
        else:
            self.cut("closed after its last answer", abort=False)

    def cut(self, reason: str, *, abort: bool = True) -> None:
        """Close the connection now, waking any task blocked on it.

        ``abort`` resets it (RST, nothing lingers in the kernel): right for a
        peer that stopped reading. Without it the peer gets an orderly FIN.
        """
        if self.cut_reason is not None:
            return
        self.cut_reason = reason
        if abort:
            try:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # already closed: nothing to abort
        # Closing the trio socket notifies tasks blocked on it (ClosedResourceError).
        self.socket.close()
