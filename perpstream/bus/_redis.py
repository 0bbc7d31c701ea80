"""Connecting to Redis through coredis, and what the bus reads back from it.

A Redis that is down at start-up, or goes away later, is waited for with the
service's backoff: neither a core nor an edge exits for it (their
``/readyz`` says why they are not ready).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import coredis
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError

from perpstream.backoff import Backoff
from perpstream.protocol import Frame

__all__ = ["REDIS_DOWN", "RedisLink", "frame_fields", "frame_of", "max_deleted"]

log = logging.getLogger("perpstream.bus")

#: What losing Redis looks like to a caller (the command is to be retried later);
#: a Redis that refuses a command (``ResponseError``) is another matter.
REDIS_DOWN = (RedisConnectionError, OSError, TimeoutError)


def frame_fields(frame: Frame, at_ms: int) -> dict[str, str | int]:
    """A frame as the fields of a Redis Stream entry (its id is ``{offset}-0``)."""
    return {"t": frame.type, "ts": frame.ts, "at": at_ms, "e": frame.epoch, "b": frame.body}


def frame_of(entry: Any, *, snapshot: bool) -> tuple[int, Frame]:
    """``(kept at ms, frame)`` from a Redis Stream entry written by :func:`frame_fields`."""
    fields = entry.field_values
    offset = int(entry.identifier.split(b"-")[0])
    frame = Frame(type=fields[b"t"].decode(), snapshot=snapshot, body=fields[b"b"].decode(), ts=int(fields[b"ts"]),
                  offset=offset, epoch=fields[b"e"].decode())
    return int(fields[b"at"]), frame


def max_deleted(info: Any) -> int:
    """The newest offset trimmed from a Redis Stream (``max-deleted-entry-id``; 0: none)."""
    raw = info.get("max-deleted-entry-id", b"0-0")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return int(text.strip("b'\"").split("-")[0])


class RedisLink:
    """One Redis connection pool for a process, kept up across Redis restarts."""

    def __init__(self, url: str, *, backoff: Backoff | None = None) -> None:
        self.url = url
        self.client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
        self.up = False
        self.last_error: str | None = None
        self._backoff = backoff or Backoff(initial=0.1, maximum=2.0)

    @property
    def where(self) -> str:
        """The server, without credentials, for logs and ``/readyz``."""
        return self.url.rsplit("@", 1)[-1]

    def went_down(self, exc: BaseException) -> None:
        if self.up:
            log.warning("Redis at %s is unreachable (%s); retrying", self.where, exc)
        self.up = False
        self.last_error = str(exc) or type(exc).__name__

    def came_up(self) -> None:
        if not self.up:
            log.info("Redis at %s is reachable", self.where)
        self.up = True
        self.last_error = None
        self._backoff.reset()

    async def retry_pause(self) -> None:
        await trio.sleep(self._backoff.next_delay())

    async def call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``command`` until it succeeds, waiting out a Redis that is down."""
        while True:
            try:
                result = await command()
            except REDIS_DOWN as exc:
                self.went_down(exc)
                await self.retry_pause()
                continue
            self.came_up()
            return result

    @asynccontextmanager
    async def open(self) -> AsyncIterator[RedisLink]:
        """The pool for the block; entered again and again until Redis answers."""
        while True:
            try:
                async with self.client:
                    await self.client.ping()
                    self.came_up()
                    yield self
                    return
            except* REDIS_DOWN as group:
                self.went_down(group.exceptions[0])
            await self.retry_pause()
            self.client = coredis.Redis.from_url(self.url, decode_responses=False)
