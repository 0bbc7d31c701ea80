"""A durable epoch in SQLite: the chain-derived streams' history survives a restart.

The positions and liquidations streams are rebuilt from the chain index,
which is durable, so their history is too: after a restart on the same
``data_dir`` they keep their epoch, and a client that was away recovers
what it missed. The file holds the epoch, the offsets reserved so far (a
block at a time, so a crash never reuses one), each kept event's frame, how
far each stream was trimmed, and the newest chain delivery whose messages
were published, per market (see :meth:`SqliteHistory.published_through`).

Writes happen on the trio thread, one small insert per event (events are
rare next to snapshots); WAL with ``synchronous=NORMAL`` keeps that cheap.
A killed process loses nothing committed.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from perpstream.history._log import HistoryLog
from perpstream.protocol import Frame

__all__ = ["HISTORY_FILENAME", "SqliteHistory"]

HISTORY_FILENAME = "stream-history.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    offset INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    type TEXT NOT NULL,
    ts INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_stream ON events (stream, offset);
CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, trimmed_through INTEGER NOT NULL);
"""


class SqliteHistory:
    """The persistence of one durable epoch (a :class:`~perpstream.history._log.Persistence`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(_SCHEMA)
        self._depth = 0
        self.epoch = self._meta("epoch") or self._new_epoch()

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit for everything inside (nested uses join the outermost).

        A chain delivery's messages and its market's published seq go in one
        transaction, so a crash leaves either all of them or none.
        """
        if self._depth == 0:
            self._conn.execute("BEGIN")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._conn.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._conn.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, key: str, value: object) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def _new_epoch(self) -> str:
        epoch = secrets.token_hex(6)
        self._set("epoch", epoch)
        return epoch

    def load(self, *, size: int, ttl_ms: int, now_ms: int) -> HistoryLog:
        """The epoch as it was left: its counter, its streams, their kept events (within the bounds)."""
        reserved = int(self._meta("reserved") or 0)
        log = HistoryLog(
            self.epoch, size=size, ttl_ms=ttl_ms, persistence=self,
            next_offset=reserved + 1, forgotten_through=int(self._meta("forgotten_through") or 0),
        )
        trimmed = dict(self._conn.execute("SELECT stream, trimmed_through FROM streams").fetchall())
        kept: dict[str, list[tuple[int, Frame]]] = {}
        for offset, stream, at_ms, kind, ts, body in self._conn.execute(
            "SELECT offset, stream, at_ms, type, ts, body FROM events ORDER BY offset"
        ):
            frame = Frame(type=kind, snapshot=False, body=body, ts=ts, offset=offset, epoch=self.epoch)
            kept.setdefault(stream, []).append((at_ms, frame))
        for stream in trimmed.keys() | kept.keys():
            log.restore(stream, kept.get(stream, []), trimmed.get(stream, 0))
        log.sweep(now_ms)  # what aged out while the daemon was down
        return log

    # ------------------------------------------------------------ Persistence

    def reserve(self, through: int) -> None:
        self._set("reserved", through)

    def append(self, stream: str, frame: Frame, at_ms: int) -> None:
        self._conn.execute(
            "INSERT INTO events (offset, stream, at_ms, type, ts, body) VALUES (?, ?, ?, ?, ?, ?)",
            (frame.offset, stream, at_ms, frame.type, frame.ts, frame.body),
        )

    def published_through(self, market_id: str) -> int:
        """The newest chain delivery ``market_id`` has published the messages of (0: none)."""
        return int(self._meta(f"published_chain_seq:{market_id}") or 0)

    def mark_published(self, market_id: str, chain_seq: int) -> None:
        """``market_id`` has published the messages of the chain deliveries up to ``chain_seq``.

        Per market: a modification goes to every market, and only the one
        holding the position has anything to say about it.
        """
        if chain_seq > self.published_through(market_id):
            self._set(f"published_chain_seq:{market_id}", chain_seq)

    def trimmed(self, stream: str, offsets: list[int]) -> None:
        with self.transaction():
            self._conn.executemany("DELETE FROM events WHERE offset = ?", [(o,) for o in offsets])
            self._conn.execute(
                "INSERT OR REPLACE INTO streams (stream, trimmed_through) VALUES (?, ?)", (stream, offsets[-1])
            )

    def forgot(self, stream: str, forgotten_through: int) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM streams WHERE stream = ?", (stream,))
            self._set("forgotten_through", forgotten_through)
