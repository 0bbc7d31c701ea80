"""User sessions: one actor per watched account, shared by all its connections.

A session starts on an account's first subscriber (several tabs, a bot and
a phone share it) and stops when the last one has been gone for a grace
period, so a page reload does not tear it down and rebuild it. Every
``positions_interval_ms`` it asks each market for the account's positions,
priced now, and publishes one ``positions_update``. The account's events
(chain events, liquidation warnings) are the markets' to publish on the same
stream: they happen, and are kept for resuming clients, whether or not
anyone is watching.

The :class:`SessionDirectory` actor owns the reference counts (rebuilt
from the streams' subscriptions if it restarts) and grace timers, and
serialises starts and stops, so a subscriber arriving just as a
session's grace period ends can never be attached to a stopping session.
It also brings back the sessions of accounts still being watched when they
vanish from under it: if the sessions supervisor escalates (a crash storm
across sessions) and is restarted, it comes back without its dynamic
children, and their subscribers would otherwise starve in silence.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal

import attrs
import trio

from actors import (
    Actor,
    ActorContext,
    ActorNotFound,
    ActorNotRunning,
    ActorRef,
    ChildSpec,
    MailboxFull,
    Registry,
    Reply,
    RequestTimeout,
    Restart,
    Supervisor,
)
from perpstream.clock import WallClock
from perpstream.history import StreamHistory
from perpstream.protocol import Channel, PositionsUpdate, PositionView, Resync
from perpstream.services.messages import GetUserPositions, UserPositions
from perpstream.services.topics import StreamPublisher, market_name, session_name
from perpstream.streams import StreamKey

__all__ = ["SessionDirectory", "SessionSettings", "UserSessionActor", "acquire_session", "session_spec"]

log = logging.getLogger("perpstream.sessions")


@attrs.frozen
class SessionSettings:
    positions_interval_ms: int = 2000
    grace_s: float = 10.0
    event_buffer: int = 256
    request_timeout_s: float = 2.0


class UserSessionActor(Actor):
    """Publishes one account's positions stream; registered as ``sessions/{address}``."""

    kind = "session"
    mailbox_capacity = 1024
    #: Gatherings of one round's views before giving the round up (see
    #: :meth:`_publish_positions`).
    GATHER_ATTEMPTS = 3

    def __init__(
        self, address: str, *, markets: Sequence[str], settings: SessionSettings, clock: WallClock,
        history: StreamHistory,
    ) -> None:
        self.address = address
        self.history = history
        self.markets = tuple(markets)
        self.settings = settings
        self.clock = clock
        self.updates = 0
        self._topics: StreamPublisher | None = None
        self._ctx: ActorContext | None = None

    async def setup(self, ctx: ActorContext) -> None:
        self._ctx = ctx
        self._topics = StreamPublisher.of(ctx, StreamKey(Channel.POSITIONS, self.address), self.settings.event_buffer,
                                       self.history)
        # A snapshot left by an earlier session means subscribers who may have
        # missed events: this session restarted, or was started again after the
        # sessions supervisor itself restarted (its cells count from 1 anew).
        if self._topics.topics.snapshots.latest is not None:
            self._topics.publish_event(Resync(reason="session_restarted"), self.clock.now_ms())
        await self._publish_positions()  # the snapshot a new subscriber gets at once
        ctx.nursery.start_soon(self._publish_periodically)

    async def handle(self, msg: object) -> None:
        log.warning("session %s: unexpected message %r", self.address, msg)

    async def on_stop(self) -> None:
        # Stopped after its last subscriber left: forget the account's topics,
        # or one pair per account ever watched would accumulate.
        if self._ctx is not None and self._topics is not None:
            key = self._topics.key
            self._ctx.registry.discard_topic(key.topic)
            self._ctx.registry.discard_topic(key.events_topic)

    def describe(self) -> dict[str, object]:
        return {"address": self.address, "updates": self.updates}

    async def _publish_periodically(self) -> None:
        while True:
            await trio.sleep(self.settings.positions_interval_ms / 1000)
            await self._publish_positions()

    async def _positions_in(self, market_id: str) -> tuple[PositionView, ...]:
        assert self._ctx is not None
        ref = self._ctx.registry.ref(market_name(market_id))
        try:
            answer: UserPositions = await ref.request(
                lambda reply: GetUserPositions(self.address, reply), timeout=self.settings.request_timeout_s
            )
        except (RequestTimeout, ActorNotFound):
            log.info("session %s: market %s did not answer; skipping it this round", self.address, market_id)
            return ()
        return answer.views

    async def _publish_positions(self) -> None:
        """Publish the account's positions, never older than an event already relayed.

        The markets answer one after another while they go on publishing
        events on the stream, so a market can apply an event (a reorg's
        rollback, say) right after it answered with the position as it was.
        Publishing that view after the event would show the client the old
        state again, so the round is gathered afresh; if events keep coming,
        the round is skipped and the next one, an interval later, tries again.
        """
        assert self._topics is not None
        events = self._topics.topics.events
        for _ in range(self.GATHER_ATTEMPTS):
            relayed = events.published
            views: list[PositionView] = []
            for market_id in self.markets:
                views.extend(await self._positions_in(market_id))
            if events.published == relayed:
                self._publish_views(views)
                return
        log.info("session %s: events kept coming while gathering positions; skipping a round", self.address)

    def _publish_views(self, views: list[PositionView]) -> None:
        total_collateral = sum((v.collateral for v in views), Decimal(0))
        total_pnl = sum((v.unrealized_pnl for v in views if v.unrealized_pnl is not None), Decimal(0))
        total_equity = sum((v.equity if v.equity is not None else v.collateral for v in views), Decimal(0))
        assert self._topics is not None
        self.updates += 1
        self._topics.publish_snapshot(
            PositionsUpdate(
                positions=tuple(views),
                total_collateral=total_collateral,
                total_unrealized_pnl=total_pnl,
                total_equity=total_equity,
            ),
            self.clock.now_ms(),
        )


@attrs.frozen
class _Acquire:
    address: str
    reply: Reply[None]


@attrs.frozen
class _Release:
    address: str


@attrs.frozen
class _Expire:
    address: str
    generation: int


@attrs.frozen
class _Reconcile:
    """Tick: start the session of every watched account that has none."""


class SessionDirectory(Actor):
    """Starts sessions on first use and stops them after the grace period."""

    kind = "session-directory"
    mailbox_capacity = 4096

    def __init__(
        self,
        *,
        supervisor: str,
        session_spec: Callable[[str], ChildSpec],
        grace_s: float,
        reconcile_interval_s: float = 1.0,
    ) -> None:
        self._supervisor_name = supervisor
        self._session_spec = session_spec
        self._grace_s = grace_s
        self._reconcile_interval_s = reconcile_interval_s
        self._users: dict[str, int] = {}
        self._generation: dict[str, int] = {}
        self._ctx: ActorContext | None = None

    async def setup(self, ctx: ActorContext) -> None:
        self._ctx = ctx
        # A restarted directory has lost its counts, but not the truth behind
        # them: every connection watching an account holds one subscription to
        # that account's positions stream. The counts are rebuilt from those;
        # sessions nobody watches are stopped rather than leaked, and a watched
        # account whose session is missing gets it back at the next reconcile.
        self._users = _watched_accounts(ctx.registry)
        self._generation = dict.fromkeys(self._users, 1)
        watched = {session_name(address) for address in self._users}
        supervisor = self._supervisor()
        for name in supervisor.child_names():
            if name not in watched:
                await supervisor.stop_child(name)
        ctx.nursery.start_soon(self._tick_reconcile)

    async def _tick_reconcile(self) -> None:
        assert self._ctx is not None
        ref = self._ctx.self_ref
        while True:
            await trio.sleep(self._reconcile_interval_s)
            try:
                ref.send_nowait(_Reconcile())
            except MailboxFull:
                pass  # swamped: the next tick will do

    def _supervisor(self) -> Supervisor:
        assert self._ctx is not None
        return self._ctx.registry.lookup_supervisor(self._supervisor_name)

    def describe(self) -> dict[str, object]:
        return {"sessions": len(self._generation), "subscribers": sum(self._users.values())}

    async def handle(self, msg: object) -> None:
        if isinstance(msg, _Acquire):
            await self._acquire(msg)
        elif isinstance(msg, _Release):
            self._release(msg.address)
        elif isinstance(msg, _Expire):
            await self._expire(msg)
        elif isinstance(msg, _Reconcile):
            await self._reconcile()

    async def _acquire(self, msg: _Acquire) -> None:
        address = msg.address
        self._users[address] = self._users.get(address, 0) + 1
        self._generation[address] = self._generation.get(address, 0) + 1
        name = session_name(address)
        try:
            # The sessions supervisor may be restarting (ActorNotRunning): that
            # refuses this subscriber, never the directory and its counts.
            supervisor = self._supervisor()
            if name not in supervisor.child_names():
                await supervisor.start_child(self._session_spec(address))
                log.info("session %s started", address)
        except Exception as exc:  # reported to the requester, who releases
            msg.reply.fail(exc)
            return
        msg.reply.send(None)

    async def _reconcile(self) -> None:
        try:
            supervisor = self._supervisor()
        except ActorNotRunning:
            return  # the sessions supervisor is backing off: try again next tick
        running = set(supervisor.child_names())
        for address in [a for a in self._users if session_name(a) not in running]:
            try:
                await supervisor.start_child(self._session_spec(address))
            except Exception as exc:
                log.warning("session %s could not be started again: %r", address, exc)
                continue
            log.warning("session %s was gone while watched; started it again", address)

    def _release(self, address: str) -> None:
        count = self._users.get(address, 0) - 1
        if count > 0:
            self._users[address] = count
            return
        self._users.pop(address, None)
        generation = self._generation.get(address, 0)
        assert self._ctx is not None
        ref = self._ctx.self_ref

        async def expire_later() -> None:
            await trio.sleep(self._grace_s)
            try:
                ref.send_nowait(_Expire(address, generation))
            except (ActorNotFound, MailboxFull):
                pass  # the directory is restarting or swamped: its setup cleans up

        self._ctx.nursery.start_soon(expire_later)

    async def _expire(self, msg: _Expire) -> None:
        if self._users.get(msg.address) or self._generation.get(msg.address) != msg.generation:
            return  # someone came back during the grace period
        assert self._ctx is not None
        watchers = _subscribers(self._ctx.registry, msg.address)
        if watchers:
            # Still watched: counts rebuilt after a restart of this directory
            # can come out low (a release queued before the restart is counted
            # twice). Keep serving, with the count set right.
            self._users[msg.address] = watchers
            return
        self._generation.pop(msg.address, None)
        name = session_name(msg.address)
        try:
            supervisor = self._supervisor()
            if name in supervisor.child_names():
                await supervisor.stop_child(name)
                log.info("session %s stopped after its grace period", msg.address)
        except (ActorNotRunning, ActorNotFound):
            pass  # the sessions supervisor restarted meanwhile, without its sessions


def _subscribers(registry: Registry, address: str) -> int:
    """Connections subscribed to an account's positions stream (one subscription each)."""
    topic = registry.find_topic(StreamKey(Channel.POSITIONS, address).topic)
    return 0 if topic is None else topic.subscriber_count


def _watched_accounts(registry: Registry) -> dict[str, int]:
    """Every account whose positions stream has subscribers, with how many."""
    prefix = f"{Channel.POSITIONS.value}/"
    watched = {}
    for topic in registry.topics():
        address = topic.name.removeprefix(prefix)
        # ``positions/{address}``, the snapshots; not ``positions/{address}/events``
        if address != topic.name and "/" not in address and topic.subscriber_count:
            watched[address] = topic.subscriber_count
    return watched


@asynccontextmanager
async def acquire_session(directory: ActorRef, address: str, *, timeout: float = 5.0) -> AsyncIterator[None]:
    """Hold an account's session open (started and ready) for the block's duration.

    The release is sent even when the acquire failed or timed out: the
    directory counted the request when it took it, so every acquire is
    balanced by exactly one release.
    """
    try:
        await directory.request(lambda reply: _Acquire(address, reply), timeout=timeout)
        yield
    finally:
        # Waiting for room in the directory's mailbox (a few seconds at most):
        # thousands of clients leaving at once, at a shutdown, fill it.
        with trio.CancelScope(shield=True), trio.move_on_after(timeout) as waited:
            try:
                await directory.send(_Release(address))
            except ActorNotFound:
                pass  # the directory is gone (the daemon is stopping): nothing to release
            except ActorNotRunning:
                log.info("could not release the session of %s: the session directory is restarting", address)
        if waited.cancelled_caught:
            log.warning("could not release the session of %s: the session directory is swamped", address)


def session_spec(
    address: str, *, markets: Sequence[str], settings: SessionSettings, clock: WallClock, history: StreamHistory
) -> ChildSpec:
    """How the sessions supervisor starts an account's session."""
    return ChildSpec(
        name=session_name(address),
        factory=lambda: UserSessionActor(address, markets=markets, settings=settings, clock=clock, history=history),
        restart=Restart.TRANSIENT,
        shutdown_timeout=2.0,
    )

