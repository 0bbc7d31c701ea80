"""The bounded history of one epoch's streams: offsets, retained events, recovery.

Pure logic, no I/O: the caller gives the time, and a :class:`Persistence`
(none for in-memory epochs) is told about every change worth keeping.

Offsets come from one counter per epoch, shared by its streams, so each
stream's offsets increase strictly (they are not contiguous: conflated
snapshots skip offsets anyway, so a client cannot count on contiguity and
the server's ``recovered`` flag is what tells it whether anything is
missing). Every message of a stream takes an offset; only events are kept,
since a snapshot is superseded by the next one and the topic keeps the
newest.

A stream can be recovered from offset ``N`` when the epoch matches, ``N``
is not ahead of the stream, and no event after ``N`` has been trimmed away.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import attrs

from perpstream.protocol import Frame
from perpstream.streams import Since, StreamKey

__all__ = ["HistoryLog", "Persistence", "Recovery", "StreamRecovery"]


@attrs.frozen
class Recovery:
    """The answer to a resume: whether it recovers, and the missed events (offset > N, in order)."""

    recovered: bool
    frames: tuple[Frame, ...] = ()


class StreamRecovery(Protocol):
    """Where a resuming subscription learns what it missed (this process's history, or a shared one)."""

    async def recover(self, key: StreamKey, since: Since) -> Recovery:
        """The events of ``key``'s stream after ``since``, if they can all be told."""


class Persistence(Protocol):
    """What a durable epoch writes down (see :mod:`perpstream.history._sqlite`)."""

    def reserve(self, through: int) -> None:
        """Offsets up to ``through`` may be handed out: never reuse them."""

    def append(self, stream: str, frame: Frame, at_ms: int) -> None:
        """An event joined ``stream``'s history."""

    def trimmed(self, stream: str, offsets: list[int]) -> None:
        """``offsets`` (oldest first) left ``stream``'s history."""

    def forgot(self, stream: str, forgotten_through: int) -> None:
        """``stream`` holds nothing any more and is forgotten; unknown streams start at ``forgotten_through``."""


class _Stream:
    __slots__ = ("events", "head", "trimmed_through", "last_at_ms")

    def __init__(self, trimmed_through: int) -> None:
        self.events: deque[tuple[int, Frame]] = deque()  # (recorded at, frame)
        self.head = 0  # newest offset published on the stream (event or snapshot)
        #: Newest offset of an event no longer kept. A stream seen anew may be
        #: one forgotten before, whose lost events are unknown: it starts at
        #: the epoch's ``forgotten_through``.
        self.trimmed_through = trimmed_through
        self.last_at_ms = 0


class HistoryLog:
    """One epoch: its offset counter and its streams' retained events.

    ``size`` events per stream are kept, none older than ``ttl_ms``. A stream
    with nothing kept and nothing published for ``ttl_ms`` is forgotten; a
    resume on a forgotten (or never seen) stream recovers only from offsets
    at or after :attr:`forgotten_through`, the newest event ever forgotten.
    """

    #: Offsets reserved ahead at a time in a durable epoch: one write per block.
    RESERVE_BLOCK = 100_000

    def __init__(
        self,
        epoch: str,
        *,
        size: int,
        ttl_ms: int,
        persistence: Persistence | None = None,
        next_offset: int = 1,
        forgotten_through: int = 0,
    ) -> None:
        self.epoch = epoch
        self.size = size
        self.ttl_ms = ttl_ms
        self.forgotten_through = forgotten_through
        self._persistence = persistence
        self._next = next_offset
        self._reserved = next_offset - 1
        self._streams: dict[str, _Stream] = {}

    # ------------------------------------------------------------ publishing

    def allocate(self, stream: str, now_ms: int) -> int:
        """The next offset, for a message about to be published on ``stream``."""
        offset = self._next
        self._next += 1
        if offset > self._reserved and self._persistence is not None:
            self._reserved = offset + self.RESERVE_BLOCK - 1
            self._persistence.reserve(self._reserved)
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _Stream(self.forgotten_through)
        state.head = offset
        state.last_at_ms = now_ms
        return offset

    def record(self, stream: str, frame: Frame, now_ms: int) -> None:
        """Keep the event ``frame`` (its offset from :meth:`allocate`, just before) in ``stream``'s history."""
        state = self._streams[stream]
        state.events.append((now_ms, frame))
        state.last_at_ms = now_ms
        if self._persistence is not None:
            self._persistence.append(stream, frame, now_ms)
        if len(state.events) > self.size:
            self._trim(stream, state, len(state.events) - self.size)

    @property
    def head(self) -> int:
        """The newest offset handed out in this epoch (0: none yet)."""
        return self._next - 1

    @property
    def reserved(self) -> int:
        """Offsets up to this one may have been handed out (a durable epoch reserves ahead)."""
        return self._reserved

    # ------------------------------------------------------------ reading

    def recover(self, stream: str, since: Since, now_ms: int) -> Recovery:
        """What a client that received ``stream`` up to ``since`` missed, if it can be told."""
        if since.epoch != self.epoch:
            return Recovery(False)
        state = self._streams.get(stream)
        if state is None:
            recovered = self.forgotten_through <= since.offset <= self.head
            return Recovery(recovered)
        self._expire(stream, state, now_ms)
        if since.offset > state.head or since.offset < state.trimmed_through:
            return Recovery(False)
        return Recovery(True, tuple(frame for _, frame in state.events if frame.offset > since.offset))

    def retained(self, stream: str) -> int:
        """How many events ``stream`` keeps now."""
        state = self._streams.get(stream)
        return 0 if state is None else len(state.events)

    @property
    def streams(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------ trimming

    def sweep(self, now_ms: int) -> None:
        """Trim every stream by age; forget the ones with nothing kept and no recent message."""
        for stream, state in list(self._streams.items()):
            self._expire(stream, state, now_ms)
            if not state.events and now_ms - state.last_at_ms > self.ttl_ms:
                del self._streams[stream]
                if state.trimmed_through > self.forgotten_through:
                    self.forgotten_through = state.trimmed_through
                if self._persistence is not None:
                    self._persistence.forgot(stream, self.forgotten_through)

    def _expire(self, stream: str, state: _Stream, now_ms: int) -> None:
        horizon = now_ms - self.ttl_ms
        count = 0
        for at_ms, _ in state.events:
            if at_ms >= horizon:
                break
            count += 1
        if count:
            self._trim(stream, state, count)

    def _trim(self, stream: str, state: _Stream, count: int) -> None:
        removed = [state.events.popleft()[1].offset for _ in range(count)]
        state.trimmed_through = removed[-1]
        if self._persistence is not None:
            self._persistence.trimmed(stream, removed)

    # ------------------------------------------------------------ loading

    def restore(self, stream: str, frames: list[tuple[int, Frame]], trimmed_through: int) -> None:
        """Put back a stream's kept events, as a durable epoch read them at start-up."""
        state = self._streams[stream] = _Stream(max(trimmed_through, self.forgotten_through))
        state.events.extend(frames)
        # Snapshots after its last event took offsets too, unrecorded: any
        # offset handed out before the restart may be a client's last.
        state.head = self.head
        state.last_at_ms = max((at for at, _ in frames), default=0)
