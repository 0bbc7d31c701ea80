"""The actor base class and the context each incarnation runs with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import trio

from ._policy import State
from ._ref import ActorRef
from ._topic import Policy, Topic

if TYPE_CHECKING:
    from ._cell import Cell, Incarnation
    from ._registry import Registry


class Actor:
    """A task that owns its state and reads one bounded mailbox.

    Subclass it and override :meth:`setup`, :meth:`handle` and
    :meth:`on_stop`, or :meth:`run` itself for full control. Supervisors build
    one instance per *incarnation* through :attr:`ChildSpec.factory`, so a
    restart always begins from fresh state; anything that must survive lives
    outside (a topic's ``latest``, a database) and is reloaded in ``setup``.

    Class attributes:

    ``kind``
        A label shown by introspection; defaults to the class name.
    ``mailbox_capacity``
        Size of the bounded mailbox. The mailbox belongs to the child's slot,
        so it is created once, with the capacity of the first incarnation.
    """

    kind: ClassVar[str] = "Actor"
    mailbox_capacity: ClassVar[int] = 256

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            cls.kind = cls.__name__

    async def run(self, ctx: ActorContext) -> None:
        """The whole life of one incarnation.

        The default: ``await self.setup(ctx)``, then ``ctx.ready()``, then
        ``await self.handle(msg)`` for each message until a stop is requested,
        then ``await self.on_stop()``. An exception anywhere (including in a
        task started in ``ctx.nursery``) is a failure of the actor; returning
        is a normal exit. If ``run`` returns without having called
        ``ctx.ready()``, the actor counts as having exited before it was ready.
        """
        await self.setup(ctx)
        ctx.ready()
        async for msg in ctx.messages():
            await self.handle(msg)
        await self.on_stop()

    async def setup(self, ctx: ActorContext) -> None:
        """Prepare state before readiness (load, connect, subscribe).

        Siblings started after this actor only start once it is ready, so this
        is where dependencies get established. The default does nothing.
        """

    async def handle(self, msg: object) -> None:
        """Process one message. The default rejects every message, failing
        the actor: a message nobody handles is a bug worth seeing."""
        raise NotImplementedError(f"{type(self).__name__} does not handle {type(msg).__name__} messages")

    async def on_stop(self) -> None:
        """Graceful-stop hook (flush, say goodbye); runs after the current
        message is finished. Not called when the actor fails or is cancelled
        at its shutdown timeout. The default does nothing."""

    def describe(self) -> dict[str, object]:
        """Extra JSON-ready fields for introspection (under ``"details"``)."""
        return {}


class ActorContext:
    """What an incarnation gets from the runtime. One per incarnation.

    Attributes:

    ``name``: the registry name. ``incarnation``: 1 for the first start, +1
    per restart. ``registry``: the system's :class:`Registry`. ``self_ref``:
    an :class:`ActorRef` to this actor.

    ``mailbox``: a :class:`trio.MemoryReceiveChannel` on the slot's bounded
    mailbox. The mailbox survives restarts (queued messages wait for the next
    incarnation; the message being handled when it failed is lost); this
    channel object is a per-incarnation clone, closed when the incarnation
    ends, so closing it does not break the slot.

    ``nursery``: for the actor's own helper tasks (timers, loops). An
    exception in one fails the actor; they are cancelled when ``run``
    returns.
    """

    def __init__(
        self,
        cell: Cell,
        incarnation: Incarnation,
        nursery: trio.Nursery,
        task_status: trio.TaskStatus[Incarnation | None],
    ) -> None:
        self.name = cell.name
        self.incarnation = incarnation.number
        self.registry: Registry = cell.registry
        self.mailbox: trio.MemoryReceiveChannel[object] = cell.open_mailbox()
        self.nursery = nursery
        self.self_ref = ActorRef(cell.registry, cell.name)
        self._cell = cell
        self._incarnation = incarnation
        self._task_status = task_status
        self._stop_requested = False
        self._stop_event = trio.Event()
        # Cancelled by a stop request while messages() waits for a message.
        self._idle_scope: trio.CancelScope | None = None
        self._topics: dict[str, Topic[Any]] = {}

    def ready(self) -> None:
        """Declare this actor ready: its supervisor goes on to start the next
        sibling. Idempotent. (It is ``task_status.started()`` of the
        ``nursery.start`` that launched the incarnation.)"""
        incarnation = self._incarnation
        if incarnation.ready:
            return
        incarnation.ready = True
        incarnation.ready_at = trio.current_time()
        if not self._stop_requested:
            self._cell.state = State.RUNNING
        self._task_status.started(None)

    @property
    def stop_requested(self) -> bool:
        """True once a graceful stop has been requested."""
        return self._stop_requested

    async def wait_stop_requested(self) -> None:
        """Return when a graceful stop is requested (at once if it was)."""
        await self._stop_event.wait()

    def messages(self) -> _Messages:
        """Iterate over mailbox messages until a stop is requested.

        A stop request interrupts the wait for the *next* message, never the
        handling of the current one: ``async for msg in ctx.messages():
        await handle(msg)`` finishes what it is doing, then the loop ends.
        """
        return _Messages(self)

    def topic(self, name: str, *, policy: Policy = Policy.CONFLATE, capacity: int = 1) -> Topic[Any]:
        """:meth:`Registry.topic`, as a view whose publishes count towards
        this actor's ``messages_out`` (and list the topic in its
        introspection)."""
        canonical = self.registry.topic(name, policy=policy, capacity=capacity)
        view = self._topics.get(name)
        if view is None:
            view = self._topics[name] = canonical._view(self._cell)
            self._cell.topics[name] = canonical
        return view

    def ref(self, name: str) -> ActorRef:
        """:meth:`Registry.ref`, counting sends towards ``messages_out``."""
        return ActorRef(self.registry, name, sender=self._cell)

    def _request_stop(self) -> None:
        if self._stop_requested:
            return
        self._stop_requested = True
        if not self._incarnation.exited.is_set():
            self._cell.state = State.STOPPING
        self._stop_event.set()
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    def _close(self) -> None:
        self.mailbox.close()


class _Messages:
    """The async iterator behind :meth:`ActorContext.messages`."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: ActorContext) -> None:
        self._ctx = ctx

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> object:
        ctx = self._ctx
        if ctx._stop_requested:
            raise StopAsyncIteration
        with trio.CancelScope() as scope:
            ctx._idle_scope = scope
            try:
                return await ctx.mailbox.receive()
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            finally:
                ctx._idle_scope = None
        raise StopAsyncIteration  # the stop request cancelled the wait
