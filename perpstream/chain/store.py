"""The indexer's durable state in SQLite.

One file holds everything the indexer must not lose: the cursor (last fully
applied block and its hash), the block hashes and per-event undo records of
the window that can still be reorged away, the derived open positions and
funding per market, and an outbox of deliveries not yet handed to the sink.
Every delivery gets its outbox ``seq`` in the transaction that changes the
state, so a snapshot can say exactly which deliveries it already reflects
(:attr:`StoreSnapshot.delivered_through`), whatever reorgs and restarts
happened in between.
Each batch of blocks is applied in ONE transaction, so whatever instant the
process dies at, the file holds a cursor and a state that match, and the
indexer resumes from the cursor without losing or repeating an event.

Durability: WAL with ``synchronous=NORMAL``. A killed process loses nothing
committed; a power cut may lose the last few commits but never corrupts the
file, and since the chain is the source of truth the indexer simply re-reads
those blocks. Quantities are stored as decimal TEXT, so they are exact.

Threads: :class:`IndexerStore` is the writer; its methods block and the
indexer runs them in a worker thread, one at a time. :class:`PositionStore`
is a separate read connection for the service (WAL lets it read while the
writer commits); its queries are small indexed reads, cheap enough to run
on the trio thread.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Iterator, Sequence

import attrs

from perpstream.chain.client import BlockHeader
from perpstream.chain.codec import dump_event, dump_meta, dump_record, load_event, load_meta, load_record
from perpstream.chain.events import (
    ChainEvent,
    Cursor,
    Finality,
    FundingUpdated,
    IndexedEvent,
    StoredFunding,
    StoredPosition,
    StoredRecord,
)
from perpstream.chain.state import InconsistentEventError, RecordKey, next_record, record_key

__all__ = [
    "DB_FILENAME",
    "ChainIdentity",
    "StoreMismatchError",
    "Batch",
    "AppliedBatch",
    "Outgoing",
    "IndexerStore",
    "PositionStore",
    "StoreSnapshot",
    "REINDEX_HINT",
]

log = logging.getLogger(__name__)

DB_FILENAME = "chain-index.sqlite3"
# 2: positions carry their last event and its finality; the outbox the record before.
SCHEMA_VERSION = "2"
REINDEX_HINT = "run `perpstream reindex` (with the daemon stopped) to rebuild the index from the chain"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    block_number INTEGER NOT NULL,
    block_hash TEXT NOT NULL
);
-- hashes of the blocks that can still be reorged away, plus the newest final one
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL);
-- events of those blocks, with the record they touched as it was before (undo)
CREATE TABLE IF NOT EXISTS window_events (
    block_number INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    event TEXT NOT NULL,
    before TEXT,
    PRIMARY KEY (block_number, log_index)
);
CREATE TABLE IF NOT EXISTS positions (
    position_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    market_id TEXT NOT NULL,
    is_long INTEGER NOT NULL,
    size TEXT NOT NULL,
    collateral TEXT NOT NULL,
    entry_price TEXT NOT NULL,
    entry_funding_index TEXT NOT NULL,
    opened_block INTEGER NOT NULL,
    last_event TEXT NOT NULL,
    finality TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS positions_by_market ON positions (market_id);
CREATE INDEX IF NOT EXISTS positions_by_account ON positions (account);
CREATE TABLE IF NOT EXISTS funding (
    market_id TEXT PRIMARY KEY,
    rate_per_hour TEXT NOT NULL,
    funding_index TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    block_number INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    finality TEXT NOT NULL,
    event TEXT NOT NULL,
    restored TEXT,
    before TEXT
);
"""

_DATA_TABLES = ("cursor", "blocks", "window_events", "positions", "funding", "outbox")
_POSITION_COLUMNS = (
    "position_id, account, market_id, is_long, size, collateral, entry_price, "
    "entry_funding_index, opened_block, last_event, finality"
)
_FUNDING_COLUMNS = "market_id, rate_per_hour, funding_index, timestamp, block_number"


@attrs.frozen
class ChainIdentity:
    """Which chain and contract a data file belongs to.

    The embedded chain is new on every start (new genesis hash) while its
    contract address repeats, so the genesis hash is what tells a stale file.
    """

    chain_id: int
    genesis_hash: str
    contract_address: str


class StoreMismatchError(RuntimeError):
    """The data file was written for another chain or contract."""


@attrs.frozen
class Batch:
    """The result of reading a range of blocks, ready to commit."""

    events: Sequence[ChainEvent]  # in (block_number, log_index) order
    headers: Sequence[BlockHeader]  # blocks to remember for reorg detection
    cursor: Cursor  # the last block of the range
    final_upto: int  # blocks at or below this number are final


@attrs.frozen
class Outgoing:
    seq: int  # outbox position; acknowledge() up to it once delivered
    delivery: IndexedEvent


@attrs.frozen
class AppliedBatch:
    outgoing: list[Outgoing]
    inconsistent: int  # events that did not fit the state (logged, state unchanged)


@attrs.frozen
class StoreSnapshot:
    """Cursor and state read in one transaction, so they match."""

    cursor: Cursor | None
    positions: list[StoredPosition]
    funding: list[StoredFunding]
    #: The outbox seq of the newest delivery this state already reflects
    #: (0: none); see :attr:`IndexedEvent.seq`.
    delivered_through: int = 0


def _schema_version(conn: sqlite3.Connection) -> str | None:
    """The version a file was written with; None for a new file."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are explicit (see _transaction).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    version = _schema_version(conn)
    if version is not None and version != SCHEMA_VERSION:
        conn.close()
        raise StoreMismatchError(
            f"{path}: written by another version of perpstream (index schema {version}, this one "
            f"reads {SCHEMA_VERSION}); {REINDEX_HINT}"
        )
    conn.executescript(_SCHEMA)
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _position_from_row(row: tuple) -> StoredPosition:  # type: ignore[type-arg]
    pid, account, market_id, is_long, size, collateral, entry, index, opened, last_event, finality = row
    return StoredPosition(
        position_id=pid,
        account=account,
        market_id=market_id,
        is_long=bool(is_long),
        size=Decimal(size),
        collateral=Decimal(collateral),
        entry_price=Decimal(entry),
        entry_funding_index=Decimal(index),
        opened_block=opened,
        last_event=load_meta(last_event),
        finality=finality,
    )


def _funding_from_row(row: tuple) -> StoredFunding:  # type: ignore[type-arg]
    market_id, rate, index, timestamp, block_number = row
    return StoredFunding(
        market_id=market_id,
        rate_per_hour=Decimal(rate),
        funding_index=Decimal(index),
        timestamp=timestamp,
        block_number=block_number,
    )


def _read_cursor(conn: sqlite3.Connection) -> Cursor | None:
    row = conn.execute("SELECT block_number, block_hash FROM cursor WHERE id = 0").fetchone()
    return None if row is None else Cursor(row[0], row[1])


def _last_seq(conn: sqlite3.Connection) -> int:
    """The newest outbox seq ever handed out (acknowledged rows are deleted, so
    the answer comes from AUTOINCREMENT's own record, not from the table)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return 0 if row is None else int(row[0])


class IndexerStore:
    """The indexer's writer connection. Blocking: call from one worker thread at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = _connect(self.path)

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------ setup and reads

    def check_identity(self, identity: ChainIdentity, *, reset_on_mismatch: bool = False) -> bool:
        """Bind the file to ``identity``; True when an old state was wiped.

        A file written for another chain raises :class:`StoreMismatchError`,
        or is emptied when ``reset_on_mismatch`` (right for the embedded
        chain, which starts from genesis on every run).
        """
        wanted = {
            "chain_id": str(identity.chain_id),
            "genesis_hash": identity.genesis_hash,
            "contract_address": identity.contract_address,
        }
        rows = self._conn.execute(
            "SELECT key, value FROM meta WHERE key IN ('chain_id', 'genesis_hash', 'contract_address')"
        ).fetchall()
        found = dict(rows)
        if found == wanted:
            return False
        if found and not reset_on_mismatch:
            raise StoreMismatchError(f"{self.path} belongs to {found}, not to {wanted}")
        with _transaction(self._conn, write=True):
            for table in _DATA_TABLES:
                self._conn.execute(f"DELETE FROM {table}")
            self._conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", wanted.items()
            )
        if found:
            log.warning("chain index %s was for %s; reset for %s", self.path, found, wanted)
        return bool(found)

    def cursor(self) -> Cursor | None:
        return _read_cursor(self._conn)

    def remembered_blocks(self) -> dict[int, str]:
        """Block number -> hash for the reorg window, including the cursor block."""
        blocks = dict(self._conn.execute("SELECT number, hash FROM blocks").fetchall())
        cursor = self.cursor()
        if cursor is not None:
            blocks[cursor.block_number] = cursor.block_hash
        return blocks

    def undelivered(self) -> list[Outgoing]:
        rows = self._conn.execute(
            "SELECT seq, finality, event, restored, before FROM outbox ORDER BY seq"
        ).fetchall()
        return [
            Outgoing(seq, IndexedEvent(
                load_event(event), finality, load_record(restored), before=load_record(before), seq=seq))
            for seq, finality, event, restored, before in rows
        ]

    def last_seq(self) -> int:
        """The newest delivery's seq (0: none yet)."""
        return _last_seq(self._conn)

    def start_block(self, configured: int) -> int:
        """Where indexing begins on an empty index: ``configured``, unless
        ``perpstream reindex --from`` said otherwise."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'reindex_from'").fetchone()
        return configured if row is None else int(row[0])

    def wipe(self, *, start_block: int | None = None) -> None:
        """Forget everything indexed (and the chain the file was bound to).

        The next start reads the chain again from ``start_block`` (None: the
        configured ``chain.start_block``). Outbox seqs keep increasing across
        a wipe, so no delivery ever reuses a seq of the same file.
        """
        with _transaction(self._conn, write=True):
            for table in _DATA_TABLES:
                self._conn.execute(f"DELETE FROM {table}")
            self._conn.execute(
                "DELETE FROM meta WHERE key IN ('chain_id', 'genesis_hash', 'contract_address', 'reindex_from')"
            )
            if start_block is not None:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('reindex_from', ?)", (str(start_block),)
                )

    def acknowledge(self, upto_seq: int) -> None:
        """Forget deliveries up to ``upto_seq``: the sink has them."""
        self._conn.execute("DELETE FROM outbox WHERE seq <= ?", (upto_seq,))

    # ------------------------------------------------------------ writes

    def apply_batch(self, batch: Batch) -> AppliedBatch:
        """Apply a batch's events, remember its blocks, move the cursor and
        finalize what is now deep enough — all in one transaction."""
        conn = self._conn
        outgoing: list[Outgoing] = []
        inconsistent = 0
        with _transaction(conn, write=True):
            now_final: list[tuple[ChainEvent, str, StoredRecord | None]] = []
            for event in batch.events:
                key = record_key(event)
                before = self._load_record(key)
                try:
                    after = _stamped(next_record(event, before), event)
                except InconsistentEventError as exc:
                    inconsistent += 1
                    log.warning(
                        "event does not fit the indexed state, state unchanged: %s "
                        "(block %d, tx %s, log %d)",
                        exc, event.meta.block_number, event.meta.tx_hash, event.meta.log_index,
                    )
                    after = before
                self._store_record(key, after)
                event_json = dump_event(event)
                outgoing.append(self._queue("pending", event, event_json, before=before))
                if event.meta.block_number > batch.final_upto:
                    conn.execute(
                        "INSERT INTO window_events (block_number, log_index, event, before) "
                        "VALUES (?, ?, ?, ?)",
                        (event.meta.block_number, event.meta.log_index, event_json, dump_record(before)),
                    )
                else:
                    now_final.append((event, event_json, before))
            conn.executemany(
                "INSERT OR REPLACE INTO blocks (number, hash) VALUES (?, ?)",
                [(h.number, h.hash) for h in batch.headers],
            )
            conn.execute(
                "INSERT OR REPLACE INTO cursor (id, block_number, block_hash) VALUES (0, ?, ?)",
                (batch.cursor.block_number, batch.cursor.block_hash),
            )
            # Window events that are final now are older than this batch's events.
            rows = conn.execute(
                "SELECT event, before FROM window_events WHERE block_number <= ? "
                "ORDER BY block_number, log_index",
                (batch.final_upto,),
            ).fetchall()
            finals = [(load_event(e), e, load_record(b)) for e, b in rows] + now_final
            for event, event_json, before in finals:
                outgoing.append(self._queue("final", event, event_json, before=before))
                self._mark_final(event)
            conn.execute("DELETE FROM window_events WHERE block_number <= ?", (batch.final_upto,))
            conn.execute("DELETE FROM blocks WHERE number < ?", (batch.final_upto,))
        return AppliedBatch(outgoing, inconsistent)

    def roll_back(self, ancestor: Cursor) -> list[Outgoing]:
        """Undo every event above ``ancestor``, newest first, in one transaction."""
        conn = self._conn
        outgoing: list[Outgoing] = []
        with _transaction(conn, write=True):
            rows = conn.execute(
                "SELECT event, before FROM window_events WHERE block_number > ? "
                "ORDER BY block_number DESC, log_index DESC",
                (ancestor.block_number,),
            ).fetchall()
            conn.execute("DELETE FROM window_events WHERE block_number > ?", (ancestor.block_number,))
            for event_json, before_json in rows:
                event = load_event(event_json)
                before = self._refreshed(load_record(before_json))
                self._store_record(record_key(event), before)
                outgoing.append(self._queue("reverted", event, event_json, restored=before, before=before))
            conn.execute("DELETE FROM blocks WHERE number > ?", (ancestor.block_number,))
            conn.execute(
                "INSERT OR REPLACE INTO cursor (id, block_number, block_hash) VALUES (0, ?, ?)",
                (ancestor.block_number, ancestor.block_hash),
            )
        return outgoing

    # ------------------------------------------------------------ helpers

    def _queue(
        self,
        finality: Finality,
        event: ChainEvent,
        event_json: str,
        *,
        before: StoredRecord | None,
        restored: StoredRecord | None = None,
    ) -> Outgoing:
        row = self._conn.execute(
            "INSERT INTO outbox (finality, event, restored, before) VALUES (?, ?, ?, ?)",
            (finality, event_json, dump_record(restored), dump_record(before)),
        )
        assert row.lastrowid is not None
        seq = row.lastrowid
        return Outgoing(seq, IndexedEvent(event, finality, restored, before=before, seq=seq))

    def _mark_final(self, event: ChainEvent) -> None:
        """The position this event last changed is settled (if nothing changed it since)."""
        if isinstance(event, FundingUpdated):
            return
        self._conn.execute(
            "UPDATE positions SET finality = 'final' WHERE position_id = ? AND last_event = ?",
            (event.position_id, dump_meta(event.meta)),
        )

    def _refreshed(self, record: StoredRecord | None) -> StoredRecord | None:
        """A record restored by a rollback, with the finality its last event has now:
        it was saved while that event was pending, which may have become final since."""
        if not isinstance(record, StoredPosition) or record.last_event is None:
            return record
        meta = record.last_event
        in_window = self._conn.execute(
            "SELECT 1 FROM window_events WHERE block_number = ? AND log_index = ?",
            (meta.block_number, meta.log_index),
        ).fetchone()
        return attrs.evolve(record, finality="pending" if in_window else "final")

    def _load_record(self, key: RecordKey) -> StoredRecord | None:
        if key.kind == "position":
            row = self._conn.execute(
                f"SELECT {_POSITION_COLUMNS} FROM positions WHERE position_id = ?", (key.id,)
            ).fetchone()
            return None if row is None else _position_from_row(row)
        row = self._conn.execute(
            f"SELECT {_FUNDING_COLUMNS} FROM funding WHERE market_id = ?", (key.id,)
        ).fetchone()
        return None if row is None else _funding_from_row(row)

    def _store_record(self, key: RecordKey, record: StoredRecord | None) -> None:
        if isinstance(record, StoredPosition):
            self._conn.execute(
                f"INSERT OR REPLACE INTO positions ({_POSITION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.position_id,
                    record.account,
                    record.market_id,
                    int(record.is_long),
                    str(record.size),
                    str(record.collateral),
                    str(record.entry_price),
                    str(record.entry_funding_index),
                    record.opened_block,
                    dump_meta(record.last_event),
                    record.finality,
                ),
            )
        elif isinstance(record, StoredFunding):
            self._conn.execute(
                f"INSERT OR REPLACE INTO funding ({_FUNDING_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (
                    record.market_id,
                    str(record.rate_per_hour),
                    str(record.funding_index),
                    record.timestamp,
                    record.block_number,
                ),
            )
        elif key.kind == "position":
            self._conn.execute("DELETE FROM positions WHERE position_id = ?", (key.id,))
        else:
            self._conn.execute("DELETE FROM funding WHERE market_id = ?", (key.id,))


def _stamped(record: StoredRecord | None, event: ChainEvent) -> StoredRecord | None:
    """A position as ``event`` left it: that event is its newest, not yet final."""
    if isinstance(record, StoredPosition):
        return attrs.evolve(record, last_event=event.meta, finality="pending")
    return record


class PositionStore:
    """Read access to the derived state, for the service.

    Reflects every committed batch; reads never block the indexer (WAL).
    Meant for one thread at a time (the trio thread).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = _connect(self.path)
        self._conn.execute("PRAGMA query_only = 1")

    def close(self) -> None:
        self._conn.close()

    def open_positions(
        self, market_id: str | None = None, *, account: str | None = None
    ) -> list[StoredPosition]:
        """Open positions, oldest first; optionally of one market and/or account."""
        return self._positions(market_id, account)

    def funding(self, market_id: str) -> StoredFunding | None:
        row = self._conn.execute(
            f"SELECT {_FUNDING_COLUMNS} FROM funding WHERE market_id = ?", (market_id,)
        ).fetchone()
        return None if row is None else _funding_from_row(row)

    def cursor(self) -> Cursor | None:
        return _read_cursor(self._conn)

    def snapshot(self, market_id: str | None = None) -> StoreSnapshot:
        """Cursor, positions and funding as of one commit."""
        with _transaction(self._conn, write=False):
            funding_rows = self._conn.execute(
                f"SELECT {_FUNDING_COLUMNS} FROM funding ORDER BY market_id"
            ).fetchall()
            return StoreSnapshot(
                delivered_through=_last_seq(self._conn),
                cursor=_read_cursor(self._conn),
                positions=self._positions(market_id, None),
                funding=[
                    _funding_from_row(r)
                    for r in funding_rows
                    if market_id is None or r[0] == market_id
                ],
            )

    def _positions(self, market_id: str | None, account: str | None) -> list[StoredPosition]:
        clauses, params = [], []
        if market_id is not None:
            clauses.append("market_id = ?")
            params.append(market_id)
        if account is not None:
            clauses.append("account = ?")
            params.append(account)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"SELECT {_POSITION_COLUMNS} FROM positions {where} ORDER BY opened_block, position_id",
            params,
        ).fetchall()
        return [_position_from_row(r) for r in rows]
