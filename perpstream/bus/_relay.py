"""The core's side of the bus: every stream's frames into Redis, with their history.

The core's actors publish as they do in one process; the stream history's
persistence (a :class:`~perpstream.history.Persistence`) is this relay,
which queues what is to be written and lets one task write it, in order, in
transactions: events into the stream's history (a Redis Stream, entry id =
offset, trimmed as the history is), each stream's newest snapshot, the
offsets reserved, and each market's published point in chain terms after
the messages it covers — all of a batch or none of it, so a core killed
mid-write leaves no event whose published point was not kept with it, for
the core taking over to publish again. Publishing never waits for Redis.

While Redis is unreachable the queue holds what is to be written (snapshots
conflated per stream, so only events accumulate); past ``max_backlog``
events it gives them up, and when Redis is back the history starts a new
epoch, so clients resuming from before are told ``recovered: false``
instead of being handed a history with a hole in it. The same when Redis
comes back without the epoch it had (restarted without persistence): its
history is gone, and a new epoch says so.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from typing import Any

import coredis
import trio
from coredis.exceptions import RedisError

from perpstream.bus._keys import BusKeys
from perpstream.bus._redis import REDIS_DOWN, RedisLink, frame_fields, frame_of, max_deleted
from perpstream.history import ChainPublished, HistoryLog
from perpstream.protocol import Frame

__all__ = ["RedisRelay"]

log = logging.getLogger("perpstream.bus")

_Op = tuple[str, Any, Any]


class RedisRelay:
    """Writes the core's streams to Redis; see the module docstring."""

    def __init__(self, link: RedisLink, keys: BusKeys, *, max_backlog: int = 100_000) -> None:
        self.link = link
        self.keys = keys
        self.max_backlog = max_backlog
        self.log: HistoryLog | None = None
        #: Each market's published point as Redis had it at :meth:`load`.
        self.loaded_chain_published: dict[str, ChainPublished] = {}
        self.written = 0
        self.lost = 0
        self._ops: deque[_Op] = deque()
        self._snapshots: dict[str, tuple[Frame, int]] = {}
        self._wake = trio.Event()
        self._new_epoch_due = False
        self._check_epoch = False

    # ------------------------------------------------------------ loading

    async def load(self, *, size: int, ttl_ms: int, now_ms: int) -> HistoryLog:
        """The bus's history as Redis has it (a new epoch when it has none): the counter, the kept events."""
        client = self.link.client
        epoch = secrets.token_hex(6)
        await self.link.call(lambda: client.set(self.keys.epoch, epoch, condition=coredis.PureToken.NX))
        stored, reserved_, forgotten_ = await self.link.call(
            lambda: client.mget([self.keys.epoch, self.keys.reserved, self.keys.forgotten]))
        epoch, reserved, forgotten = stored.decode(), int(reserved_ or 0), int(forgotten_ or 0)
        log_ = HistoryLog(epoch, size=size, ttl_ms=ttl_ms, persistence=self, next_offset=reserved + 1,
                          forgotten_through=forgotten)
        keys = [key async for key in client.scan_iter(match=self.keys.events_pattern)]
        for key in keys:
            entries, info = await self.link.call(lambda key=key: self._read_stream(key))  # type: ignore[misc]
            stream = self.keys.stream_of_events_key(key.decode())
            log_.restore(stream, [frame_of(e, snapshot=False) for e in entries], max_deleted(info))
        log_.sweep(now_ms)
        self.log = log_
        points = await self.link.call(lambda: client.hgetall(self.keys.published))
        self.loaded_chain_published = {market.decode(): ChainPublished.from_json(text)
                                       for market, text in points.items()}
        log.info("bus history on %s: epoch %s, %d streams kept, offsets from %d", self.link.where, epoch,
                 len(keys), reserved + 1)
        return log_

    async def _read_stream(self, key: bytes) -> tuple[Any, Any]:
        return await self.link.client.xrange(key), await self.link.client.xinfo_stream(key)

    # ------------------------------------------------------------ Persistence (called on publish)

    def reserve(self, through: int) -> None:
        self._queue(("set", self.keys.reserved, through))

    def append(self, stream: str, frame: Frame, at_ms: int) -> None:
        self._queue(("event", stream, (frame, at_ms)))

    def trimmed(self, stream: str, offsets: list[int]) -> None:
        self._queue(("trim", stream, offsets[-1]))

    def forgot(self, stream: str, forgotten_through: int) -> None:
        self._queue(("forget", stream, forgotten_through))

    def chain_published(self, market_id: str, point: ChainPublished) -> None:
        self._queue(("published", market_id, point.to_json()))

    def snapshot(self, stream: str, frame: Frame, at_ms: int) -> None:
        """A snapshot for the stream's ``snap`` key (only the newest waits to be written)."""
        self._snapshots[stream] = (frame, at_ms)
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._ops) + len(self._snapshots)

    def _queue(self, op: _Op) -> None:
        if len(self._ops) >= self.max_backlog:
            self.lost += len(self._ops)
            self._ops.clear()
            self._new_epoch_due = True
            log.error("the bus backlog passed %d writes while Redis is unreachable: dropped; a new epoch "
                      "starts when it is back (resuming clients get recovered: false)", self.max_backlog)
        self._ops.append(op)
        self._wake.set()

    # ------------------------------------------------------------ writing

    async def run(self) -> None:
        """Write what is queued, in order, for as long as the core runs."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._ops or self._snapshots:
                ops, snapshots = list(self._ops), dict(self._snapshots)
                try:
                    if self._check_epoch:
                        await self._verify_epoch()
                    if self._new_epoch_due:
                        await self._start_new_epoch()
                    await self._write(ops, snapshots)
                except REDIS_DOWN as exc:
                    self.link.went_down(exc)
                    self._check_epoch = True
                    await self.link.retry_pause()
                    continue
                except RedisError as exc:  # a refused write is not retried forever: the next ones go on
                    log.error("Redis refused a bus write batch (%d writes dropped): %s", len(ops), exc)
                self.link.came_up()
                for _ in ops:
                    self._ops.popleft()
                for stream, written in snapshots.items():
                    if self._snapshots.get(stream) is written:
                        del self._snapshots[stream]
                self.written += len(ops) + len(snapshots)

    async def _write(self, ops: list[_Op], snapshots: dict[str, tuple[Frame, int]]) -> None:
        keys = self.keys
        async with self.link.client.pipeline(transaction=True) as pipe:
            for kind, target, value in ops:
                if kind == "set":
                    pipe.set(target, value)
                elif kind == "published":
                    pipe.hset(keys.published, {target: value})
                elif kind == "event":
                    frame, at_ms = value
                    pipe.xadd(keys.events(target), frame_fields(frame, at_ms), identifier=f"{frame.offset}-0")
                elif kind == "trim":
                    pipe.xtrim(keys.events(target), coredis.PureToken.MINID, value + 1)
                else:  # forget
                    pipe.delete([keys.events(target)])
                    pipe.set(keys.forgotten, value)
            for stream, (frame, at_ms) in snapshots.items():
                pipe.xadd(keys.snapshot(stream), frame_fields(frame, at_ms), identifier=f"{frame.offset}-0",
                          trim_strategy=coredis.PureToken.MAXLEN, threshold=1)

    async def _verify_epoch(self) -> None:
        """After an outage: is Redis's history still ours?"""
        found = await self.link.client.get(self.keys.epoch)
        if self.log is not None and (found is None or found.decode() != self.log.epoch):
            log.warning("Redis came back without the bus history (epoch %s gone)", self.log.epoch)
            self._new_epoch_due = True
        self._check_epoch = False

    async def _start_new_epoch(self) -> None:
        epoch = secrets.token_hex(6)
        async with self.link.client.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.epoch, epoch)
            if self.log is not None:
                pipe.set(self.keys.reserved, self.log.reserved)
        if self.log is not None:
            self.log.epoch = epoch
        self._new_epoch_due = False
        log.warning("bus history: new epoch %s (%d writes lost while Redis was unreachable)", epoch, self.lost)
