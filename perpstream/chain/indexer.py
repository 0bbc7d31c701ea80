"""The event indexer: chain logs -> decoded events -> durable state + deliveries.

Each poll reads the logs of the next block range with eth_getLogs, decodes
them, and commits them together with the new cursor in one SQLite
transaction (see :mod:`perpstream.chain.store`); only then are the resulting
deliveries handed to the sink, from the store's outbox. A crash at any point
loses nothing and applies nothing twice to the state; deliveries are at least
once (the unacknowledged tail is delivered again after a restart).

Reorgs: the hashes of the blocks that are not yet final are kept. Every poll
first checks that the cursor block still has the hash it had; if not, it
walks back to the newest block whose hash still matches, rolls the state
back to it (undo records, newest first: ``reverted`` deliveries) and carries
on from there along the new branch. A reorg deeper than ``confirmations`` is
beyond what the window can undo and stops the indexer
(:class:`ReorgTooDeepError`).

Range: the eth_getLogs range halves when the node refuses it ("too many
results", "range too wide") and doubles back toward ``max_block_range``
after a few successes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, NoReturn, Sequence, TypeVar

import attrs
import trio

from perpstream.chain.artifact import load_artifact
from perpstream.chain.client import (
    BlockHeader,
    ChainClient,
    RangeTooLargeError,
    RawLog,
    TransientChainError,
)
from perpstream.chain.decoding import EventDecoder, LogDecodeError
from perpstream.chain.events import ChainEvent, Cursor, IndexedEvent
from perpstream.chain.store import Batch, ChainIdentity, IndexerStore, Outgoing, PositionStore

__all__ = [
    "Indexer",
    "IndexerStatus",
    "PollOutcome",
    "RetryPolicy",
    "BlockRange",
    "ReorgTooDeepError",
    "EventSink",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

EventSink = Callable[[IndexedEvent], Awaitable[None]]


class ReorgTooDeepError(RuntimeError):
    """A reorg replaced blocks the indexer already treats as final."""


@attrs.frozen
class RetryPolicy:
    """Backoff for transient chain errors; gives up after ``max_attempts`` in a row."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_attempts: int = 8

    def delay(self, failures: int) -> float:
        return float(min(self.max_delay_s, self.initial_delay_s * 2 ** (failures - 1)))


@attrs.define
class BlockRange:
    """The eth_getLogs block span: halves on refusal, doubles after successes."""

    maximum: int
    grow_after: int = 3  # successful requests in a row before doubling
    current: int = attrs.field(init=False)
    _successes: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.maximum < 1:
            raise ValueError("maximum block range must be at least 1")
        self.current = self.maximum

    def refused(self, span: int) -> None:
        self.current = max(1, span // 2)
        self._successes = 0

    def succeeded(self) -> None:
        self._successes += 1
        if self._successes >= self.grow_after and self.current < self.maximum:
            self.current = min(self.maximum, self.current * 2)
            self._successes = 0


@attrs.define
class IndexerStatus:
    """What /readyz and /metrics report about the indexer."""

    head_block: int | None = None
    indexed_block: int | None = None
    prepared: bool = False
    block_range: int = 0
    events_applied: int = 0
    decode_errors: int = 0
    inconsistent_events: int = 0
    reorgs: int = 0
    reverted_events: int = 0
    rpc_errors: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock, seconds since the epoch
    last_poll_at: float | None = None

    @property
    def lag(self) -> int | None:
        """Blocks between the chain head and the indexed cursor."""
        if self.head_block is None or self.indexed_block is None:
            return None
        return max(0, self.head_block - self.indexed_block)


@attrs.frozen
class PollOutcome:
    events: int  # events applied by this poll
    caught_up: bool  # nothing more to read right now: wait a poll interval
    reorged: bool = False


class _ChainMoved(Exception):
    """The chain changed while a poll was reading it; the next poll sorts it out."""


class Indexer:
    """Indexes the exchange's events from ``client`` into ``store``.

    ``on_event`` receives every delivery (see :class:`IndexedEvent`) in order,
    after the batch that produced it is committed; it may await (back
    pressure). ``confirmations``: blocks mined on top of an event's block
    before it is final — also the deepest reorg the indexer can undo.
    """

    def __init__(
        self,
        client: ChainClient,
        store: IndexerStore,
        *,
        address: str,
        on_event: EventSink,
        confirmations: int = 3,
        start_block: int = 0,
        poll_interval_s: float = 1.0,
        max_block_range: int = 2000,
        retry: RetryPolicy = RetryPolicy(),
        reset_on_mismatch: bool = False,
        decoder: EventDecoder | None = None,
        sleep: Callable[[float], Awaitable[None]] = trio.sleep,
        wall_clock: Callable[[], float] = time.time,
        status: IndexerStatus | None = None,
    ) -> None:
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        self._client = client
        self._store = store
        self._address = address
        self._on_event = on_event
        self._confirmations = confirmations
        self._start_block = start_block
        self._poll_interval_s = poll_interval_s
        self._range = BlockRange(max_block_range)
        self._retry = retry
        self._reset_on_mismatch = reset_on_mismatch
        self._decoder = decoder or EventDecoder(load_artifact().abi)
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._db_limiter = trio.CapacityLimiter(1)
        self._outbox_pending = True  # deliveries may be left from an earlier run
        # Pass the previous incarnation's status to keep counters across restarts.
        self.status = status if status is not None else IndexerStatus()
        self.status.prepared = False
        self.status.block_range = self._range.current

    def positions(self) -> PositionStore:
        """A read connection to this indexer's derived state (caller closes it)."""
        return PositionStore(self._store.path)

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Poll forever, pausing ``poll_interval_s`` whenever caught up.

        Reports started once the data file is bound to the chain (see
        :meth:`IndexerStore.check_identity`). Raises after
        ``retry.max_attempts`` transient failures in a row, at once on
        anything else (a fatal RPC error, a reorg too deep, a sink failure).
        """
        await self._retrying(self._prepare)
        task_status.started()
        while True:
            outcome = await self._retrying(self.poll_once)
            if outcome.caught_up:
                await self._sleep(self._poll_interval_s)

    async def poll_once(self) -> PollOutcome:
        """One step: check for a reorg, then read, apply and deliver one block range."""
        await self._prepare()
        if self._outbox_pending:
            await self._deliver(await self._db(self._store.undelivered))
        head = await self._client.block_number()
        self.status.head_block = head
        self.status.last_poll_at = self._wall_clock()
        cursor = await self._db(self._store.cursor)
        if cursor is not None:
            if head < cursor.block_number:
                # A node behind a load balancer can lag; a real reorg to a
                # shorter branch shows up once that branch passes the cursor.
                log.info("chain head %d is below the cursor %d; waiting", head, cursor.block_number)
                return PollOutcome(events=0, caught_up=True)
            header = await self._client.get_block_header(cursor.block_number)
            if header is None:
                raise TransientChainError(f"node reports head {head} but has no block {cursor.block_number}")
            if header.hash != cursor.block_hash:
                await self._roll_back_reorg(cursor)
                return PollOutcome(events=0, caught_up=False, reorged=True)
        first = cursor.block_number + 1 if cursor is not None else self._start_block
        if first > head:
            return PollOutcome(events=0, caught_up=True)
        try:
            logs, last = await self._fetch_logs(first, min(head, first + self._range.current - 1))
            final_upto = head - self._confirmations
            headers = await self._fetch_headers(max(first, final_upto), last, cursor)
            _check_logs_match_headers(logs, headers)
        except _ChainMoved as exc:
            # Nothing is committed; the next poll sees the settled chain.
            log.info("chain changed during the poll (%s); polling again", exc)
            return PollOutcome(events=0, caught_up=True)
        events = self._decode(logs)
        batch = Batch(
            events=events,
            headers=[h for h in headers if h.number >= final_upto],
            cursor=Cursor(last, headers[-1].hash),
            final_upto=final_upto,
        )
        applied = await self._db(self._store.apply_batch, batch)
        self.status.indexed_block = last
        self.status.events_applied += len(events)
        self.status.inconsistent_events += applied.inconsistent
        await self._deliver(applied.outgoing)
        return PollOutcome(events=len(events), caught_up=last == head)

    # ------------------------------------------------------------ steps

    async def _prepare(self) -> None:
        if self.status.prepared:
            return
        chain_id = await self._client.chain_id()
        genesis = await self._client.get_block_header(0)
        if genesis is None:
            raise TransientChainError("node has no genesis block")
        identity = ChainIdentity(chain_id, genesis.hash, self._address)
        await self._db(
            self._store.check_identity, identity, reset_on_mismatch=self._reset_on_mismatch
        )
        cursor = await self._db(self._store.cursor)
        self.status.indexed_block = cursor.block_number if cursor else None
        self.status.prepared = True

    async def _fetch_logs(self, first: int, last: int) -> tuple[list[RawLog], int]:
        """Logs of ``[first, last]``, shrinking ``last`` while the node refuses the range."""
        while True:
            try:
                logs = await self._client.get_logs(first, last, self._address)
            except RangeTooLargeError as exc:
                span = last - first + 1
                if span == 1:
                    raise
                self._range.refused(span)
                self.status.block_range = self._range.current
                log.info("eth_getLogs refused %d blocks (%s); trying %d", span, exc, self._range.current)
                last = first + self._range.current - 1
                continue
            self._range.succeeded()
            self.status.block_range = self._range.current
            return logs, last

    async def _fetch_headers(self, first: int, last: int, cursor: Cursor | None) -> list[BlockHeader]:
        """Headers of ``[first, last]`` (at least ``last``'s), checked to form one chain."""
        headers: list[BlockHeader] = []
        for number in range(min(first, last), last + 1):
            header = await self._client.get_block_header(number)
            if header is None:
                raise _ChainMoved(f"block {number} disappeared")
            if headers and header.parent_hash != headers[-1].hash:
                raise _ChainMoved(f"block {number} does not follow block {number - 1}")
            headers.append(header)
        if (
            cursor is not None
            and headers[0].number == cursor.block_number + 1
            and headers[0].parent_hash != cursor.block_hash
        ):
            raise _ChainMoved(f"block {headers[0].number} does not follow the cursor")
        return headers

    def _decode(self, logs: Sequence[RawLog]) -> list[ChainEvent]:
        events: list[ChainEvent] = []
        for raw in logs:
            try:
                events.append(self._decoder.decode(raw))
            except LogDecodeError as exc:
                self.status.decode_errors += 1
                log.warning(
                    "skipping a log that does not decode: %s (block %d, tx %s, log %d)",
                    exc, raw.block_number, raw.tx_hash, raw.log_index,
                )
        events.sort(key=lambda e: e.meta.order)
        return events

    async def _roll_back_reorg(self, cursor: Cursor) -> None:
        remembered = await self._db(self._store.remembered_blocks)
        for number in sorted(remembered, reverse=True):
            header = await self._client.get_block_header(number)
            if header is not None and header.hash == remembered[number]:
                ancestor = Cursor(number, header.hash)
                break
        else:
            raise ReorgTooDeepError(
                f"block {cursor.block_number} was replaced and no remembered block down to "
                f"{min(remembered)} is still on the chain: the reorg is deeper than "
                f"confirmations={self._confirmations}"
            )
        outgoing = await self._db(self._store.roll_back, ancestor)
        self.status.reorgs += 1
        self.status.reverted_events += len(outgoing)
        self.status.indexed_block = ancestor.block_number
        log.warning(
            "reorg: rolled back from block %d to %d, %d events reverted",
            cursor.block_number, ancestor.block_number, len(outgoing),
        )
        await self._deliver(outgoing)

    async def _deliver(self, outgoing: list[Outgoing]) -> None:
        if not outgoing:
            self._outbox_pending = False
            return
        # Until acknowledged, a failure here leaves them in the outbox for the next poll.
        self._outbox_pending = True
        for item in outgoing:
            await self._on_event(item.delivery)
        await self._db(self._store.acknowledge, outgoing[-1].seq)
        self._outbox_pending = False

    # ------------------------------------------------------------ plumbing

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking store work in a worker thread, one call at a time."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._db_limiter)

    async def _retrying(self, step: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                result = await step()
            except TransientChainError as exc:
                self._record_error(exc)
                self.status.rpc_errors += 1
                self.status.consecutive_failures += 1
                if self.status.consecutive_failures >= self._retry.max_attempts:
                    raise
                delay = self._retry.delay(self.status.consecutive_failures)
                log.warning("chain request failed (%s); retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                continue
            except Exception as exc:
                self._record_error(exc)
                raise
            self.status.consecutive_failures = 0
            return result

    def _record_error(self, exc: Exception) -> None:
        self.status.last_error = f"{type(exc).__name__}: {exc}"
        self.status.last_error_at = self._wall_clock()


def _check_logs_match_headers(logs: Sequence[RawLog], headers: Sequence[BlockHeader]) -> None:
    """Logs of blocks we hold headers for must come from those very blocks."""
    hashes = {h.number: h.hash for h in headers}
    for raw in logs:
        expected = hashes.get(raw.block_number)
        if expected is not None and raw.block_hash != expected:
            raise _ChainMoved(f"log of block {raw.block_number} is from another branch")
