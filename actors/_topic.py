"""Topics: non-blocking fan-out from one publisher to many subscribers.

A :class:`Topic` hands every published item, as the *same object*, to each of
its subscribers without ever blocking or awaiting, so an actor can publish to
ten thousand WebSocket writers and get straight back to its mailbox. What a
subscriber that does not keep up experiences depends on the topic's
:class:`Policy`:

``Policy.CONFLATE``
    The subscriber only ever holds the newest item. :meth:`Subscription.take`
    returns it together with the number of items it skipped since its previous
    take. Right for state that supersedes itself (a price, a position).
``Policy.QUEUE``
    The subscriber holds a FIFO of up to ``capacity`` items. A subscriber that
    falls ``capacity`` items behind is *closed* with reason ``"overflow"``: it
    can still drain what it holds, then :class:`SubscriptionClosed` tells it
    what happened. Items are never dropped silently and the publisher never
    waits. Right for events that must not be lost (fills, liquidations).

A consumer that serves several subscriptions (one WebSocket connection with
many channels) attaches them all to one :class:`Sink` and runs one task::

    sink = actors.Sink()
    subs = [registry.topic(name).subscribe(sink) for name in names]
    while True:
        await sink.wait()
        for sub in sink.pending():
            while (delivery := sub.take()) is not None:   # raises SubscriptionClosed
                await websocket.send(delivery.item)

Cost model. ``publish`` on a CONFLATE topic touches only the subscribers that
were fully caught up (they need a wake-up); one that has an unread item costs
nothing at all, however slow it is. On a QUEUE topic every subscriber gets one
deque append. A wake-up is a dict insertion, plus one
``trio.lowlevel.reschedule`` if the consumer task is parked in
:meth:`Sink.wait`. There are no per-subscriber tasks, and the only allocation
per publish is one shared :class:`Delivery` (created lazily for CONFLATE).

Subscribing does not replay history: take a snapshot from :attr:`Topic.latest`
right after subscribing (both are synchronous, so nothing can slip between
them).
"""

from __future__ import annotations

import collections
import enum
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio

from ._errors import SubscriptionClosed

T = TypeVar("T")


class Policy(enum.Enum):
    """What a topic does for a subscriber that has not read yet (see module doc)."""

    CONFLATE = "conflate"
    QUEUE = "queue"


@attrs.frozen
class Delivery(Generic[T]):
    """One item handed to a subscriber.

    ``skipped`` (CONFLATE only) counts the items published since the
    subscriber's previous take that it will never see. A delivery with
    ``skipped == 0`` may be the very same object for every subscriber.
    """

    item: T
    skipped: int = 0


@attrs.frozen
class SubscriptionStats:
    """Counters of one subscription: items ``delivered`` by take/receive, and
    items ``conflated`` (skipped) in their favour. For a CONFLATE subscription
    that has caught up, ``delivered + conflated`` equals the number of items
    published since it subscribed."""

    delivered: int
    conflated: int


class _PublishCounter(Protocol):
    """Whoever wants publishes through a topic view counted (an actor slot)."""

    messages_out: int


class Sink:
    """A wake-up point that lets one task wait on many subscriptions.

    Every subscription notifies exactly one sink (a private one when none is
    given to :meth:`Topic.subscribe`). A subscription is *pending* on its sink
    while it has something to take or has been closed by overflow; it leaves
    the pending set by itself when :meth:`Subscription.take` drains it (or
    reports the closure), so a consumer that stops half-way loses nothing:
    the next :meth:`wait` returns at once.

    Only one task may wait on a sink at a time; a second gets
    :class:`trio.BusyResourceError`. :meth:`wait` may also return spuriously
    (after a subscription on it was closed by its owner) with nothing
    pending, so consumers loop.
    """

    __slots__ = ("_ready", "_waiter")

    def __init__(self) -> None:
        self._ready: dict[Subscription[Any], None] = {}
        self._waiter: trio.lowlevel.Task | None = None

    async def wait(self) -> None:
        """Return as soon as any attached subscription is pending.

        Always a checkpoint. Parks the task (no polling) while nothing is
        pending; a publish wakes it with a single reschedule.
        """
        if self._ready:
            await trio.lowlevel.checkpoint()
            return
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already waiting on this Sink")
        self._waiter = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def pending(self) -> list[Subscription[Any]]:
        """The subscriptions that have something to take or were closed by
        overflow, in the order they became pending. A copy: taking from them
        while iterating is fine."""
        return list(self._ready)

    def __bool__(self) -> bool:
        """True while some attached subscription is pending."""
        return bool(self._ready)


class Subscription(Generic[T]):
    """One subscriber's view of a :class:`Topic`; made by :meth:`Topic.subscribe`.

    Use it as a context manager to unsubscribe on exit. Not thread-safe; meant
    to be read by one task.
    """

    __slots__ = ("_core", "_sink", "_own_sink", "_delivered", "_conflated", "_closed_reason")

    def __init__(self, core: _Core[T], sink: Sink | None) -> None:
        self._core = core
        self._own_sink = sink is None
        self._sink = Sink() if sink is None else sink
        self._delivered = 0
        self._conflated = 0
        self._closed_reason: str | None = None

    @property
    def topic(self) -> Topic[T]:
        """The topic subscribed to (the registry's canonical object)."""
        return self._core.facade

    @property
    def sink(self) -> Sink:
        """The sink this subscription notifies."""
        return self._sink

    @property
    def closed_reason(self) -> str | None:
        """``None`` while open; ``"overflow"`` or ``"closed"`` once closed."""
        return self._closed_reason

    @property
    def stats(self) -> SubscriptionStats:
        return SubscriptionStats(delivered=self._delivered, conflated=self._conflated)

    @property
    def backlog(self) -> int:
        """Items waiting to be taken (CONFLATE: 0 or 1)."""
        raise NotImplementedError

    def take(self) -> Delivery[T] | None:
        """The next delivery, or ``None`` if there is nothing new. Never blocks.

        CONFLATE: the newest item, with the count of items skipped since the
        previous take. QUEUE: the oldest unread item. Raises
        :class:`SubscriptionClosed` once the subscription is closed and
        everything it held has been taken.
        """
        raise NotImplementedError

    async def receive(self) -> Delivery[T]:
        """Wait for and return the next delivery (see :meth:`take`).

        Only for a subscription with its own sink (``subscribe()`` without a
        ``sink``): with a shared sink, wait on the sink and ``take()`` instead.
        Raises :class:`SubscriptionClosed` once closed and drained.
        """
        if not self._own_sink:
            raise RuntimeError("receive() needs a subscription with its own Sink; use sink.wait() + take()")
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            delivery = self.take()
            if delivery is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return delivery
            await self._sink.wait()

    def close(self) -> None:
        """Unsubscribe now. Undelivered items are discarded; later takes raise
        :class:`SubscriptionClosed` (``"closed"``, unless it had already been
        closed by overflow). Idempotent."""
        if self._closed_reason is None:
            self._closed_reason = "closed"
        self._core.subs.pop(self, None)
        sink = self._sink
        sink._ready.pop(self, None)
        self._discard()
        # Wake a task blocked in receive() so that it sees the closure. (With
        # a shared sink this is a spurious wake-up, which waiters tolerate.)
        waiter = sink._waiter
        if waiter is not None:
            sink._waiter = None
            trio.lowlevel.reschedule(waiter)

    def _discard(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._closed_reason or "open"
        return f"<Subscription to {self._core.name!r} {state} backlog={self.backlog}>"


class _ConflatingSubscription(Subscription[T]):
    """CONFLATE: remembers only the sequence number it has seen; the item
    itself is the topic's ``latest``, so a publish stores nothing per
    subscriber."""

    __slots__ = ("_seen",)
    _core: _ConflateCore[T]

    def __init__(self, core: _ConflateCore[T], sink: Sink | None) -> None:
        super().__init__(core, sink)
        self._seen = core.seq
        core.subs[self] = None
        core.armed[self] = None

    @property
    def backlog(self) -> int:
        return 0 if self._closed_reason is not None or self._core.seq == self._seen else 1

    def take(self) -> Delivery[T] | None:
        if self._closed_reason is not None:
            raise SubscriptionClosed(self._closed_reason)
        core = self._core
        seq = core.seq
        seen = self._seen
        if seq == seen:
            return None
        self._seen = seq
        self._delivered += 1
        skipped = seq - seen - 1
        if skipped:
            self._conflated += skipped
            delivery: Delivery[T] = Delivery(core.latest, skipped)  # type: ignore[arg-type]
        else:
            delivery = core.fresh or core.make_fresh()
        # Caught up: leave the sink's pending set, and ask for a wake-up at the
        # next publish.
        self._sink._ready.pop(self, None)
        core.armed[self] = None
        return delivery

    def _discard(self) -> None:
        self._core.armed.pop(self, None)


class _QueuedSubscription(Subscription[T]):
    """QUEUE: a bounded FIFO of shared :class:`Delivery` objects."""

    __slots__ = ("_queue",)

    def __init__(self, core: _QueueCore[T], sink: Sink | None) -> None:
        super().__init__(core, sink)
        self._queue: collections.deque[Delivery[T]] = collections.deque()
        core.subs[self] = None

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def take(self) -> Delivery[T] | None:
        queue = self._queue
        if queue:
            delivery = queue.popleft()
            self._delivered += 1
            if not queue and self._closed_reason is None:
                self._sink._ready.pop(self, None)
            return delivery
        if self._closed_reason is not None:
            self._sink._ready.pop(self, None)
            raise SubscriptionClosed(self._closed_reason)
        return None

    def _discard(self) -> None:
        self._queue.clear()


class _Core(Generic[T]):
    """The state shared by a topic and all its views."""

    __slots__ = ("name", "policy", "capacity", "seq", "latest", "subs", "facade")

    def __init__(self, name: str, policy: Policy, capacity: int, facade: Topic[T]) -> None:
        self.name = name
        self.policy = policy
        self.capacity = capacity
        self.seq = 0
        self.latest: T | None = None
        # dict as an insertion-ordered set: O(1) removal, fast iteration.
        self.subs: dict[Subscription[T], None] = {}
        self.facade = facade

    def publish(self, item: T) -> None:
        raise NotImplementedError

    def subscribe(self, sink: Sink | None) -> Subscription[T]:
        raise NotImplementedError


class _ConflateCore(_Core[T]):
    __slots__ = ("armed", "fresh")

    def __init__(self, name: str, policy: Policy, capacity: int, facade: Topic[T]) -> None:
        super().__init__(name, policy, capacity, facade)
        # Subscribers that are caught up and want a wake-up at the next publish.
        self.armed: dict[Subscription[T], None] = {}
        # The shared zero-skip Delivery of ``latest``, built on first take.
        self.fresh: Delivery[T] | None = None

    def make_fresh(self) -> Delivery[T]:
        self.fresh = Delivery(self.latest)  # type: ignore[arg-type]
        return self.fresh

    def publish(self, item: T) -> None:
        self.seq += 1
        self.latest = item
        self.fresh = None
        armed = self.armed
        if armed:
            self.armed = {}
            reschedule = trio.lowlevel.reschedule
            for sub in armed:  # mark pending, wake a parked consumer
                sink = sub._sink
                sink._ready[sub] = None
                waiter = sink._waiter
                if waiter is not None:
                    sink._waiter = None
                    reschedule(waiter)

    def subscribe(self, sink: Sink | None) -> Subscription[T]:
        return _ConflatingSubscription(self, sink)


class _QueueCore(_Core[T]):
    __slots__ = ()

    def publish(self, item: T) -> None:
        self.seq += 1
        self.latest = item
        subs = self.subs
        if not subs:
            return
        delivery = Delivery(item)
        capacity = self.capacity
        overflowed: list[Subscription[T]] | None = None
        reschedule = trio.lowlevel.reschedule
        for sub in subs:
            queue = sub._queue  # type: ignore[attr-defined]
            backlog = len(queue)
            if backlog >= capacity:
                if overflowed is None:
                    overflowed = [sub]
                else:
                    overflowed.append(sub)
                continue
            queue.append(delivery)
            if not backlog:  # it just became pending: as above
                sink = sub._sink
                sink._ready[sub] = None
                waiter = sink._waiter
                if waiter is not None:
                    sink._waiter = None
                    reschedule(waiter)
        if overflowed is not None:
            for sub in overflowed:
                # Still pending on its sink (its queue is full), so its reader
                # drains what it holds and then learns of the overflow.
                sub._closed_reason = "overflow"
                del subs[sub]

    def subscribe(self, sink: Sink | None) -> Subscription[T]:
        return _QueuedSubscription(self, sink)


class Topic(Generic[T]):
    """A named fan-out point; see the module docstring for the semantics.

    Get topics from :meth:`Registry.topic` (one object per name for the life
    of the system, so subscribers outlive the actor incarnations that publish)
    or from :meth:`ActorContext.topic`, which returns a *view* of the same
    topic that counts its publishes as the actor's ``messages_out``. Views
    compare equal to the topic they view. A standalone ``Topic(...)`` also
    works, outside any actor system.
    """

    __slots__ = ("_core", "_counter")

    def __init__(self, name: str, *, policy: Policy = Policy.CONFLATE, capacity: int = 1) -> None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy, got {policy!r}")
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        core_type = _ConflateCore if policy is Policy.CONFLATE else _QueueCore
        self._core: _Core[T] = core_type(name, policy, capacity, self)
        self._counter: _PublishCounter | None = None

    def _view(self, counter: _PublishCounter) -> Topic[T]:
        """A view of this topic whose publishes bump ``counter.messages_out``."""
        view: Topic[T] = Topic.__new__(Topic)
        view._core = self._core
        view._counter = counter
        return view

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def policy(self) -> Policy:
        return self._core.policy

    @property
    def capacity(self) -> int:
        """QUEUE: the per-subscriber backlog that triggers overflow. CONFLATE: 1."""
        return self._core.capacity

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions (overflowed ones no longer count)."""
        return len(self._core.subs)

    @property
    def published(self) -> int:
        """Items published since the topic was created."""
        return self._core.seq

    @property
    def latest(self) -> T | None:
        """The newest published item (``None`` before the first publish)."""
        return self._core.latest

    def publish(self, item: T) -> None:
        """Hand ``item`` to every subscriber. Never blocks, never awaits,
        never raises because of a subscriber."""
        counter = self._counter
        if counter is not None:
            counter.messages_out += 1
        self._core.publish(item)

    def subscribe(self, sink: Sink | None = None) -> Subscription[T]:
        """Start receiving the items published from now on.

        ``sink``: the :class:`Sink` to notify; by default a private one, which
        makes :meth:`Subscription.receive` available.
        """
        return self._core.subscribe(sink)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topic) and other._core is self._core

    def __hash__(self) -> int:
        return id(self._core)

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<Topic {core.name!r} {core.policy.value} capacity={core.capacity} "
            f"subscribers={len(core.subs)} published={core.seq}>"
        )
