"""Every stream's offsets, epoch and history, for publishers and for resuming clients.

In one process, two epochs: the chain-derived streams (positions,
liquidations) share a durable one when the daemon has a data directory —
their state is rebuilt from the chain index after a restart, so their
history can be kept too — and the others (prices, market stats) an
in-memory one that a restart replaces, since their history really is lost
then. A core publishing to edges keeps one epoch for all of them in Redis
(:meth:`StreamHistory.on_bus`), where it outlives any one core.

Which chain deliveries clients were told of (:meth:`StreamHistory.told`)
is kept with the history: in one process by the delivery's outbox ``seq``,
on a bus in chain terms (:class:`~perpstream.history.ChainPublished`),
since a core taking over delivers from an index of its own.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from perpstream.chain.events import IndexedEvent
from perpstream.history._chain_published import ChainPublished
from perpstream.history._log import HistoryLog, Recovery
from perpstream.history._sqlite import SqliteHistory
from perpstream.protocol import Channel, Frame
from perpstream.streams import Since, StreamKey

__all__ = ["BusRelay", "StreamHistory"]

_DURABLE = frozenset({Channel.POSITIONS, Channel.LIQUIDATIONS})


def _new_epoch() -> str:
    return secrets.token_hex(6)


class BusRelay(Protocol):
    """What a bus keeps besides the log's events (which go through the log's persistence)."""

    def snapshot(self, stream: str, frame: Frame, at_ms: int) -> None:
        """A stream's newest snapshot, for subscribers elsewhere."""

    def chain_published(self, market_id: str, point: ChainPublished) -> None:
        """``market_id``'s published point, kept after the messages published before it."""


class StreamHistory:
    """Offsets for publishers, recovery for subscribers (see the package docs)."""

    def __init__(
        self, *, volatile: HistoryLog, durable: HistoryLog, now_ms: Callable[[], int], file: SqliteHistory | None = None,
        relay: BusRelay | None = None, chain_published: dict[str, ChainPublished] | None = None,
    ) -> None:
        self.volatile = volatile
        self.durable = durable
        self._now_ms = now_ms
        self._file = file
        self._relay = relay
        self._published: dict[str, int] = {}
        self._chain_published = chain_published

    @classmethod
    def in_memory(cls, *, size: int, ttl_s: float, now_ms: Callable[[], int]) -> StreamHistory:
        """Both epochs in memory: a restart starts new ones."""
        ttl_ms = int(ttl_s * 1000)
        return cls(volatile=HistoryLog(_new_epoch(), size=size, ttl_ms=ttl_ms),
                   durable=HistoryLog(_new_epoch(), size=size, ttl_ms=ttl_ms), now_ms=now_ms)

    @classmethod
    def open(cls, path: str | Path, *, size: int, ttl_s: float, now_ms: Callable[[], int]) -> StreamHistory:
        """The chain-derived streams' epoch from (or into) the file at ``path``."""
        ttl_ms = int(ttl_s * 1000)
        file = SqliteHistory(path)
        durable = file.load(size=size, ttl_ms=ttl_ms, now_ms=now_ms())
        return cls(volatile=HistoryLog(_new_epoch(), size=size, ttl_ms=ttl_ms), durable=durable,
                   now_ms=now_ms, file=file)

    @classmethod
    def on_bus(cls, log: HistoryLog, relay: BusRelay, *, now_ms: Callable[[], int],
               chain_published: dict[str, ChainPublished]) -> StreamHistory:
        """One epoch for every stream, persisted (and relayed) by ``relay``, which is ``log``'s persistence.

        ``chain_published``: each market's published point as the bus has it (from whichever core published).
        """
        return cls(volatile=log, durable=log, now_ms=now_ms, relay=relay, chain_published=dict(chain_published))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    @property
    def logs(self) -> tuple[HistoryLog, ...]:
        """The epochs, each once (on a bus, one serves every stream)."""
        return (self.volatile,) if self.volatile is self.durable else (self.volatile, self.durable)

    def log_of(self, key: StreamKey) -> HistoryLog:
        return self.durable if key.channel in _DURABLE else self.volatile

    # ------------------------------------------------------------ publishing

    def position(self, key: StreamKey) -> tuple[int, str]:
        """``(offset, epoch)`` for the next message of ``key``'s stream."""
        log = self.log_of(key)
        return log.allocate(key.name, self._now_ms()), log.epoch

    def record(self, key: StreamKey, frame: Frame) -> None:
        """Keep an event (its offset from :meth:`position`) for resuming clients."""
        self.log_of(key).record(key.name, frame, self._now_ms())

    def snapshot(self, key: StreamKey, frame: Frame) -> None:
        """A snapshot was published: this process's topic keeps the newest; a relay hands it on."""
        if self._relay is not None:
            self._relay.snapshot(key.name, frame, self._now_ms())

    def told(self, market_id: str, indexed: IndexedEvent) -> bool:
        """Whether ``market_id`` has published the messages of this chain delivery already.

        Redelivered after a restart, or delivered by a core taking over
        from one that had published it: the market applies it to its state
        (if it must) and tells nobody again.
        """
        if self._chain_published is not None:
            return self._chain_published.setdefault(market_id, ChainPublished()).told(indexed)
        return 0 < indexed.seq <= self._seq_published(market_id)

    def _seq_published(self, market_id: str) -> int:
        """The newest delivery seq ``market_id`` has published: read from the file once, then kept here."""
        if market_id not in self._published:
            self._published[market_id] = self._file.published_through(market_id) if self._file is not None else 0
        return self._published[market_id]

    @contextmanager
    def chain_delivery(self, market_id: str, indexed: IndexedEvent) -> Iterator[None]:
        """``market_id`` publishes one chain delivery's messages: they and its published point are kept together,
        or not at all."""
        if self._chain_published is not None:
            yield
            point = self._chain_published.setdefault(market_id, ChainPublished())
            if point.mark(indexed):
                assert self._relay is not None
                self._relay.chain_published(market_id, point)
            return
        if self._file is None:
            yield
        else:
            with self._file.transaction():
                yield
                self._file.mark_published(market_id, indexed.seq)
        self._published[market_id] = max(self._seq_published(market_id), indexed.seq)

    def sweep(self) -> None:
        """Trim by age and forget idle streams (called every second or so)."""
        now_ms = self._now_ms()
        for log in self.logs:
            log.sweep(now_ms)

    # ------------------------------------------------------------ resuming

    async def recover(self, key: StreamKey, since: Since) -> Recovery:
        """What a client that received ``key``'s stream up to ``since`` missed.

        Asynchronous because a shared history elsewhere (another process)
        needs I/O; this one answers at once. The caller subscribes to the
        live stream *before* asking and drops live frames at or below the
        newest one recovered, so nothing published meanwhile is lost or doubled.
        """
        return self.log_of(key).recover(key.name, since, self._now_ms())
