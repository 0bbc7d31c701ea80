"""The edge's side of the bus: the streams its clients need, from Redis into local topics.

An edge follows a stream while it has subscribers: the stream's newest
snapshot is read at once, then one reader task tails every followed
stream's Redis Streams (events and snapshot) with a blocking ``XREAD`` and
publishes each frame, as the core encoded it, into the edge's own topics,
where today's per-connection writers and their backpressure take over.
Resuming clients recover from the history in Redis (:meth:`EdgeStreams.recover`).

An account's positions stream is followed only while someone watches it,
and the core only runs the account's session while some edge says so: a
key per account with a TTL, refreshed while followed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from coredis.exceptions import ResponseError

from actors import Registry
from perpstream.bus._keys import BusKeys
from perpstream.bus._redis import REDIS_DOWN, RedisLink, frame_of, max_deleted
from perpstream.history import Recovery
from perpstream.protocol import Channel, Frame
from perpstream.services.topics import StreamTopics
from perpstream.streams import Since, StreamKey

__all__ = ["EdgeStreams", "StreamUnavailable"]

log = logging.getLogger("perpstream.bus")


class StreamUnavailable(RuntimeError):
    """Redis did not answer in time: the stream cannot be followed right now."""


@attrs.define(eq=False)
class _Followed:
    key: StreamKey
    topics: StreamTopics
    subscribers: int = 0
    events_from: str | bytes = b"0-0"  # the id after which the reader takes events
    snapshot_from: str | bytes = b"0-0"


class EdgeStreams:
    """Follows streams for this edge's subscribers and answers their resumes from Redis."""

    #: How long one blocking read waits; a newly followed stream joins the next read.
    BLOCK_MS = 200
    #: How long a subscriber waits for Redis before being told the stream is unavailable.
    ATTACH_TIMEOUT_S = 3.0

    def __init__(self, link: RedisLink, keys: BusKeys, registry: Registry, *, event_buffer: int,
                 interest_ttl_s: float) -> None:
        self.link = link
        self.keys = keys
        self.registry = registry
        self.event_buffer = event_buffer
        self.interest_ttl_s = interest_ttl_s
        self.frames = 0
        self._followed: dict[str, _Followed] = {}
        self._changed = trio.Event()
        self._starting: dict[str, trio.Event] = {}

    @property
    def followed(self) -> int:
        return len(self._followed)

    # ------------------------------------------------------------ following

    @asynccontextmanager
    async def follow(self, key: StreamKey) -> AsyncIterator[None]:
        """Keep ``key``'s stream flowing into this edge's topics for the block's duration."""
        followed = self._followed.get(key.name) or await self._first_follower(key)
        followed.subscribers += 1
        try:
            yield
        finally:
            followed.subscribers -= 1
            if followed.subscribers == 0 and self._followed.get(key.name) is followed:
                del self._followed[key.name]
                self.registry.discard_topic(key.topic)
                self.registry.discard_topic(key.events_topic)

    async def _first_follower(self, key: StreamKey) -> _Followed:
        """Set the stream up, or wait for the setup already under way (one per stream at a time)."""
        underway = self._starting.get(key.name)
        if underway is not None:
            await underway.wait()
            followed = self._followed.get(key.name)
            if followed is None:
                raise StreamUnavailable(f"{key.name} could not be followed just now")
            return followed
        self._starting[key.name] = done = trio.Event()
        try:
            return await self._start_following(key)
        finally:
            del self._starting[key.name]
            done.set()

    async def _start_following(self, key: StreamKey) -> _Followed:
        client = self.link.client
        followed = _Followed(key, StreamTopics.of(self.registry, key, self.event_buffer))
        with trio.move_on_after(self.ATTACH_TIMEOUT_S) as waited:
            try:
                if key.channel is Channel.POSITIONS:
                    await self._refresh_interest([key])
                snapshot = await client.xrevrange(self.keys.snapshot(key.name), count=1)
                last_event = await client.xrevrange(self.keys.events(key.name), count=1)
            except REDIS_DOWN as exc:
                self.link.went_down(exc)
                raise StreamUnavailable(f"Redis at {self.link.where} is unreachable") from exc
        if waited.cancelled_caught:
            raise StreamUnavailable(f"Redis at {self.link.where} did not answer in {self.ATTACH_TIMEOUT_S:g} s")
        self.link.came_up()
        if snapshot:
            followed.snapshot_from = snapshot[0].identifier
            _, frame = frame_of(snapshot[0], snapshot=True)
            self._publish(followed, frame)
        if last_event:
            followed.events_from = last_event[0].identifier
        self._followed[key.name] = followed
        self._changed.set()
        return followed

    def _publish(self, followed: _Followed, frame: Frame) -> None:
        topics = followed.topics
        if frame.snapshot:
            latest = topics.snapshots.latest
            if latest is None or latest.offset < frame.offset:
                topics.snapshots.publish(frame)
        else:
            topics.events.publish(frame)
        self.frames += 1

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Tail the followed streams, and keep their accounts' interest alive, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_interest)
            await self._tail()

    async def _tail(self) -> None:
        while True:
            if not self._followed:
                self._changed = trio.Event()
                await self._changed.wait()
                continue
            positions: dict[str, tuple[_Followed, bool]] = {}
            streams: dict[str, str | bytes] = {}
            for followed in self._followed.values():
                name = followed.key.name
                events_key, snapshot_key = self.keys.events(name), self.keys.snapshot(name)
                streams[events_key], positions[events_key] = followed.events_from, (followed, False)
                streams[snapshot_key], positions[snapshot_key] = followed.snapshot_from, (followed, True)
            try:
                answer = await self.link.client.xread(streams, block=self.BLOCK_MS, count=1000)
            except REDIS_DOWN as exc:
                self.link.went_down(exc)
                await self.link.retry_pause()
                continue
            self.link.came_up()
            for key, entries in (answer or {}).items():
                followed, snapshot = positions[key.decode()]
                if self._followed.get(followed.key.name) is not followed:
                    continue  # unfollowed while the read was on its way
                for entry in entries:
                    _, frame = frame_of(entry, snapshot=snapshot)
                    self._publish(followed, frame)
                if snapshot:
                    followed.snapshot_from = entries[-1].identifier
                else:
                    followed.events_from = entries[-1].identifier

    async def _keep_interest(self) -> None:
        while True:
            await trio.sleep(self.interest_ttl_s / 3)
            accounts = [f.key for f in self._followed.values() if f.key.channel is Channel.POSITIONS]
            if accounts:
                try:
                    await self._refresh_interest(accounts)
                except REDIS_DOWN as exc:
                    self.link.went_down(exc)

    async def _refresh_interest(self, keys: list[StreamKey]) -> None:
        async with self.link.client.pipeline(transaction=False) as pipe:
            for key in keys:
                assert key.key is not None
                pipe.set(self.keys.interest(key.key), b"1", px=int(self.interest_ttl_s * 1000))

    # ------------------------------------------------------------ resuming

    async def recover(self, key: StreamKey, since: Since) -> Recovery:
        """The history in Redis after ``since`` (see :meth:`perpstream.history.HistoryLog.recover`)."""
        client, keys = self.link.client, self.keys
        try:
            epoch, reserved, forgotten = await client.mget([keys.epoch, keys.reserved, keys.forgotten])
            if epoch is None or epoch.decode() != since.epoch or since.offset > int(reserved or 0):
                return Recovery(False)
            info: Any = await client.xinfo_stream(keys.events(key.name))
        except REDIS_DOWN as exc:
            self.link.went_down(exc)
            return Recovery(False)
        except ResponseError as exc:  # "no such key": nothing kept, or forgotten
            if "no such key" not in str(exc):
                raise
            return Recovery(int(forgotten or 0) <= since.offset)
        if since.offset < max_deleted(info):
            return Recovery(False)
        entries = await client.xrange(keys.events(key.name), start=f"{since.offset + 1}-0")
        return Recovery(True, tuple(frame_of(e, snapshot=False)[1] for e in entries))
