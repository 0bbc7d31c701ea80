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
beyond what the window can undo (:class:`ReorgTooDeepError`).

A chain that shrinks: when the node's head is below the cursor, the
remembered hashes at or below the head tell a replaced chain (one of them
differs: roll back to the newest that matches, or stop) from a node that is
merely behind (they all match, or none is that low). The second case is
not knowable at once — a node behind a load balancer lags for a while — so
the indexer reports itself behind (not ready, negative lag) and only after
``shrink_grace_s`` treats the missing blocks as gone: rolled back when the
window reaches, a :class:`ChainResetError` when it does not.

Stopping: what retrying cannot fix — a reorg too deep, a reset chain, a
data file of another chain, a fatal RPC error, one block with more logs than
the provider serves — stops the indexer in place (:meth:`Indexer.run` keeps
running but polls no more): :attr:`IndexerStatus.halted` says why and what
the operator can do; the rest of the daemon keeps serving.

Range: the eth_getLogs range follows what the node says when it refuses
one — a span limit becomes the new ceiling, a suggested range is taken as
is — and halves when the refusal says nothing; it doubles back toward the
ceiling after a few successes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, NoReturn, Sequence, TypeVar

import attrs
import trio

from perpstream.backoff import Backoff
from perpstream.chain.artifact import load_artifact
from perpstream.chain.client import (
    BlockHeader,
    ChainClient,
    FatalChainError,
    RangeHint,
    RangeTooLargeError,
    RawLog,
    TransientChainError,
)
from perpstream.chain.decoding import EventDecoder, LogDecodeError
from perpstream.chain.events import ChainEvent, Cursor, IndexedEvent
from perpstream.chain.store import (
    REINDEX_HINT,
    Batch,
    ChainIdentity,
    IndexerStore,
    Outgoing,
    PositionStore,
    StoreMismatchError,
)

__all__ = [
    "Indexer",
    "IndexerStatus",
    "PollOutcome",
    "RetryPolicy",
    "BlockRange",
    "ReorgTooDeepError",
    "ChainResetError",
    "BlockTooLargeError",
    "EventSink",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

EventSink = Callable[[IndexedEvent], Awaitable[None]]


class ReorgTooDeepError(RuntimeError):
    """A reorg replaced blocks the indexer already treats as final."""


class ChainResetError(RuntimeError):
    """The node's chain no longer holds the indexed blocks (reset or replaced)."""


class BlockTooLargeError(FatalChainError):
    """One block alone has more logs than the node serves in one eth_getLogs."""


# What stops the indexer, with what the operator can do about it.
_REMEDIES: tuple[tuple[type[Exception], str], ...] = (
    (ReorgTooDeepError, REINDEX_HINT),
    (ChainResetError, REINDEX_HINT),
    (StoreMismatchError, f"check chain.rpc_url and chain.contract_address, or {REINDEX_HINT}"),
    (BlockTooLargeError, "point chain.rpc_url at a node or plan that serves more logs per eth_getLogs"),
    (FatalChainError, "check chain.rpc_url and the provider's account, then restart the daemon"),
)
_HALTING = tuple(kind for kind, _ in _REMEDIES)


def remedy_for(exc: BaseException) -> str | None:
    """The way out of an error that stops the indexer; None for any other error."""
    for kind, remedy in _REMEDIES:
        if isinstance(exc, kind):
            return remedy
    return None


@attrs.frozen
class RetryPolicy:
    """Backoff for transient chain errors; gives up after ``max_attempts`` in a row.

    Delays double from ``initial_delay_s`` up to ``max_delay_s``, with the
    jitter of the service's one :class:`~perpstream.backoff.Backoff`, so many
    daemons behind one provider do not retry in step.
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_attempts: int = 8

    def backoff(self) -> Backoff:
        return Backoff(initial=self.initial_delay_s, maximum=self.max_delay_s)


@attrs.define
class BlockRange:
    """The eth_getLogs block span.

    On a refusal it takes the node's word where there is one: a stated span
    limit lowers the ceiling for good (asking for more again would only be
    refused again), a suggested range (a result-count limit: the next range
    may hold fewer logs) sets the next span only. A refusal that names no
    number halves the span; when it is still about the span itself, the
    refused span bounds the ceiling, and growing back bisects between the
    last span that worked and that bound instead of doubling into it again.
    After ``grow_after`` successes in a row the span grows toward the ceiling.
    """

    maximum: int
    grow_after: int = 3  # successful requests in a row before growing
    current: int = attrs.field(init=False)
    ceiling: int = attrs.field(init=False)
    _successes: int = attrs.field(init=False, default=0)
    _last_ok: int = attrs.field(init=False, default=0)  # the span of the newest success
    _bisecting: bool = attrs.field(init=False, default=False)  # ceiling learnt from refusals alone

    def __attrs_post_init__(self) -> None:
        if self.maximum < 1:
            raise ValueError(f"max_block_range = {self.maximum}: expected at least 1")
        self.current = self.ceiling = self.maximum

    def refused(self, span: int, hint: RangeHint = RangeHint(), *, first: int | None = None) -> None:
        """``span`` blocks from ``first`` were refused, with what the node said would work."""
        self._successes = 0
        limit = hint.span_limit
        if limit is not None and limit < span:
            self.ceiling = min(self.ceiling, limit)
            self.current = self.ceiling
            self._bisecting = False
            return
        suggested = hint.suggested
        if suggested is not None and suggested[0] == first and suggested[1] - suggested[0] + 1 < span:
            self.current = suggested[1] - suggested[0] + 1
            return
        if hint.span_limited:
            self.ceiling = max(1, min(self.ceiling, span - 1))
            self._bisecting = True
            if 0 < self._last_ok <= self.ceiling:
                self.current = self._last_ok
                return
        self.current = max(1, span // 2)

    def succeeded(self, span: int | None = None) -> None:
        """A request of ``span`` blocks (default: the current span) was served."""
        self._last_ok = self.current if span is None else span
        self._successes += 1
        if self._successes >= self.grow_after and self.current < self.ceiling:
            if self._bisecting:
                self.current = (self.current + self.ceiling + 1) // 2
            else:
                self.current = min(self.ceiling, self.current * 2)
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
    #: Why the indexer stopped, and what the operator can do; None while it runs.
    halted: str | None = None
    remedy: str | None = None

    @property
    def lag(self) -> int | None:
        """Blocks between the chain head and the indexed cursor.

        Negative when the node's head is below the cursor: the chain shrank
        or was reset, or the node is behind; either way the index is not
        (yet) of the node's chain.
        """
        if self.head_block is None or self.indexed_block is None:
            return None
        return self.head_block - self.indexed_block


@attrs.frozen
class PollOutcome:
    events: int  # events applied by this poll
    caught_up: bool  # nothing more to read right now: wait a poll interval
    reorged: bool = False


# Polls in a row that may find the chain changing under them before it counts as a failure.
_MAX_MOVED_POLLS = 5


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
        shrink_grace_s: float = 30.0,
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
        self._backoff = retry.backoff()
        self._reset_on_mismatch = reset_on_mismatch
        self._shrink_grace_s = shrink_grace_s
        self._below_since: float | None = None  # trio time the head was first seen below the cursor
        self._moved_in_a_row = 0  # polls in a row that saw the chain change under them
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
        :meth:`IndexerStore.check_identity`), or once it has stopped. An
        error retrying cannot fix stops the indexer in place (see
        :attr:`IndexerStatus.halted`) instead of raising: a supervisor's
        restarts would only repeat it. Raises after ``retry.max_attempts``
        transient failures in a row, and on anything unexpected (a sink
        failure), for the supervisor to restart it.
        """
        started = False
        try:
            await self._retrying(self._prepare)
            task_status.started()
            started = True
            while True:
                outcome = await self._retrying(self.poll_once)
                if outcome.caught_up:
                    await self._sleep(self._poll_interval_s)
        except _HALTING as exc:
            self._halt(exc)
            if not started:
                task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")

    def _halt(self, exc: Exception) -> None:
        self.status.halted = f"{type(exc).__name__}: {exc}"
        self.status.remedy = remedy_for(exc)
        remedy = self.status.remedy
        way_out = "" if remedy is None or remedy in self.status.halted else f". The way out: {remedy}"
        log.error("chain indexer stopped: %s%s", self.status.halted, way_out)

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
                return await self._head_below_cursor(head, cursor)
            if self._below_since is not None:
                log.info("chain head %d is at or above the cursor %d again", head, cursor.block_number)
                self._below_since = None
            header = await self._client.get_block_header(cursor.block_number)
            if header is None:
                raise TransientChainError(f"node reports head {head} but has no block {cursor.block_number}")
            if header.hash != cursor.block_hash:
                await self._roll_back_reorg(cursor)
                return PollOutcome(events=0, caught_up=False, reorged=True)
        first = cursor.block_number + 1 if cursor is not None else await self._db(
            self._store.start_block, self._start_block)
        if first > head:
            return PollOutcome(events=0, caught_up=True)
        try:
            logs, last = await self._fetch_logs(first, min(head, first + self._range.current - 1))
            final_upto = head - self._confirmations
            headers = await self._fetch_headers(max(first, final_upto), last, cursor)
            _check_logs_match_headers(logs, headers)
        except _ChainMoved as exc:
            # Nothing is committed; the next poll normally sees the settled chain.
            self._moved_in_a_row += 1
            if self._moved_in_a_row >= _MAX_MOVED_POLLS:
                # A node whose blocks do not link up poll after poll is not
                # settling: back off like any failing node, and say so.
                self._moved_in_a_row = 0
                raise TransientChainError(
                    f"the node's chain changed during {_MAX_MOVED_POLLS} polls in a row ({exc})") from exc
            log.info("chain changed during the poll (%s); polling again", exc)
            return PollOutcome(events=0, caught_up=True)
        self._moved_in_a_row = 0
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

    async def _head_below_cursor(self, head: int, cursor: Cursor) -> PollOutcome:
        """The node's head is below the cursor: a shorter chain, a reset one, or a lagging node."""
        remembered = await self._db(self._store.remembered_blocks)
        ancestor: Cursor | None = None
        replaced = False
        for number in sorted((n for n in remembered if n <= head), reverse=True):
            header = await self._client.get_block_header(number)
            if header is not None and header.hash == remembered[number]:
                ancestor = Cursor(number, header.hash)
                break
            replaced = True
        now = trio.current_time()
        if self._below_since is None:
            self._below_since = now
            log.warning(
                "chain head %d is below the indexed block %d: the chain shrank or was reset, "
                "or the node is behind", head, cursor.block_number,
            )
        settled = replaced or now - self._below_since >= self._shrink_grace_s
        if not settled:
            return PollOutcome(events=0, caught_up=True)
        if ancestor is None:
            lowest = min(remembered) if remembered else cursor.block_number
            raise ChainResetError(
                f"the node's chain has its head at block {head}, below the indexed block "
                f"{cursor.block_number}, and none of the remembered blocks {lowest}..{cursor.block_number} "
                f"is on it: the chain was reset or replaced; {REINDEX_HINT}"
            )
        self._below_since = None
        await self._roll_back_to(ancestor, cursor, why="chain shrank")
        return PollOutcome(events=0, caught_up=False, reorged=True)

    async def _fetch_logs(self, first: int, last: int) -> tuple[list[RawLog], int]:
        """Logs of ``[first, last]``, shrinking ``last`` while the node refuses the range."""
        while True:
            try:
                logs = await self._client.get_logs(first, last, self._address)
            except RangeTooLargeError as exc:
                span = last - first + 1
                if span == 1:
                    raise BlockTooLargeError(
                        f"block {first} alone has more logs of the exchange than the node serves in "
                        f"one eth_getLogs ({exc})"
                    ) from exc
                self._range.refused(span, exc.hint, first=first)
                self.status.block_range = self._range.current
                log.info("eth_getLogs refused %d blocks (%s); trying %d", span, exc, self._range.current)
                last = first + self._range.current - 1
                continue
            self._range.succeeded(last - first + 1)
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
                f"confirmations={self._confirmations}; {REINDEX_HINT}"
            )
        await self._roll_back_to(ancestor, cursor, why="reorg")

    async def _roll_back_to(self, ancestor: Cursor, cursor: Cursor, *, why: str) -> None:
        outgoing = await self._db(self._store.roll_back, ancestor)
        self.status.reorgs += 1
        self.status.reverted_events += len(outgoing)
        self.status.indexed_block = ancestor.block_number
        log.warning(
            "%s: rolled back from block %d to %d, %d events reverted",
            why, cursor.block_number, ancestor.block_number, len(outgoing),
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
                delay = self._backoff.next_delay()
                log.warning("chain request failed (%s); retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                continue
            except Exception as exc:
                self._record_error(exc)
                raise
            if self.status.consecutive_failures:
                self._backoff.reset()
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
