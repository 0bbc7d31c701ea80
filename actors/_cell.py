"""A child's slot, and the runner of one incarnation.

The *cell* (Akka's word) is what a name refers to for as long as the child is
part of its supervisor: the mailbox, the counters, the last failure. Each
start runs a fresh actor instance as a new *incarnation* inside it. The cell
does no supervision itself; supervisors (and the system, for the root) decide
when incarnations start and stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._actor import Actor, ActorContext
from ._errors import ActorNotFound, InjectedFailure, MailboxFull
from ._policy import ChildSpec, State

if TYPE_CHECKING:
    from ._registry import Registry
    from ._topic import Topic


@attrs.frozen
class Failure:
    """Why an incarnation failed, as shown by introspection.

    ``at`` is on trio's clock (comparable with ``trio.current_time()``),
    ``wall_time`` is Unix time.
    """

    type: str
    message: str
    at: float
    wall_time: float

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        return cls(type(exc).__name__, str(exc), trio.current_time(), time.time())

    def as_dict(self) -> dict[str, object]:
        return {"type": self.type, "message": self.message, "at": self.at, "wall_time": self.wall_time}


def _leaf(error: BaseException) -> BaseException:
    """The single exception inside nested one-member groups (trio wraps a
    helper task's exception in an ExceptionGroup), else ``error`` itself."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


class Incarnation:
    """One run of one actor instance inside a cell."""

    __slots__ = (
        "cell", "number", "actor", "ctx", "scope", "exited", "failure",
        "ready", "ready_at", "stopping", "injected",
    )  # fmt: skip

    def __init__(self, cell: Cell, number: int) -> None:
        self.cell = cell
        self.number = number
        self.actor: Actor | None = None
        self.ctx: ActorContext | None = None
        self.scope: trio.CancelScope | None = None
        self.exited = trio.Event()
        # The exception it ended with, unwrapped from one-member groups.
        self.failure: BaseException | None = None
        self.ready = False
        self.ready_at: float | None = None
        # Set when its stop was requested by its owner (supervisor or system):
        # such an exit is expected and not reported as a child exit.
        self.stopping = False
        self.injected: InjectedFailure | None = None

    def inject_failure(self, reason: str) -> None:
        """Make it fail now with :class:`InjectedFailure` (see
        :meth:`Registry.fail_actor`): its cancel scope is cancelled and the
        exit is reported as that failure."""
        if self.injected is None:
            self.injected = InjectedFailure(reason)
        self.cancel()

    def cancel(self) -> None:
        if self.scope is not None:
            self.scope.cancel()


class Cell:
    """The slot of one named child; survives its restarts.

    Building the cell builds the first actor instance, which fixes the
    mailbox capacity; the mailbox then lives as long as the cell.
    """

    def __init__(self, spec: ChildSpec, registry: Registry) -> None:
        first = self._checked(spec.factory())
        capacity = first.mailbox_capacity
        if not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"{type(first).__name__}.mailbox_capacity must be an int >= 0")
        self.spec = spec
        self.name = spec.name
        self.registry = registry
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[object](capacity)
        # The latest instance (kept after it ends, for introspection), and the
        # first one until it has been started.
        self.actor: Actor = first
        self._unstarted: Actor | None = first
        self.state = State.STARTING
        self.current: Incarnation | None = None
        self.incarnations = 0
        self.last_failure: Failure | None = None
        self.messages_in = 0
        self.messages_out = 0
        # Topics this actor obtained through ctx.topic (for introspection).
        self.topics: dict[str, Topic[Any]] = {}

    @staticmethod
    def _checked(actor: object) -> Actor:
        if not isinstance(actor, Actor):
            raise TypeError(f"a ChildSpec factory must return an Actor, got {actor!r}")
        return actor

    def build(self) -> Actor:
        """The actor instance for the next incarnation."""
        actor = self._unstarted
        if actor is None:
            actor = self._checked(self.spec.factory())
        self._unstarted = None
        self.actor = actor
        return actor

    def begin_incarnation(self) -> Incarnation:
        self.incarnations += 1
        incarnation = Incarnation(self, self.incarnations)
        self.current = incarnation
        self.state = State.STARTING
        return incarnation

    def open_mailbox(self) -> trio.MemoryReceiveChannel[object]:
        return self._receive.clone()

    @property
    def mailbox_used(self) -> int:
        return self._send.statistics().current_buffer_used

    def deliver_nowait(self, msg: object) -> None:
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            raise MailboxFull(self.name, self.capacity) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorNotFound(self.name) from None
        self.messages_in += 1

    async def deliver(self, msg: object) -> None:
        try:
            await self._send.send(msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorNotFound(self.name) from None
        self.messages_in += 1

    def close(self) -> None:
        """Close the mailbox for good (the child was removed): queued messages
        are dropped and blocked senders get :class:`ActorNotFound`."""
        self._send.close()
        self._receive.close()


async def run_incarnation(
    cell: Cell,
    on_exit: Callable[[Incarnation], None],
    *,
    task_status: trio.TaskStatus[Incarnation | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one incarnation of ``cell``; meant for ``nursery.start``.

    ``nursery.start`` returns ``None`` once the actor called ``ctx.ready()``;
    a later exit is reported through ``on_exit`` (unless the owner asked it to
    stop). If the incarnation ends before it was ready, ``nursery.start``
    returns the ended :class:`Incarnation` instead.

    Failures are ``Exception`` s, caught with ``except*`` so that groups from
    the helper nursery are handled too. ``trio.Cancelled``, ``KeyboardInterrupt``
    and other ``BaseException`` s propagate untouched, except the cancellation
    of the incarnation's own scope (forced stop, injected failure).
    """
    incarnation = cell.begin_incarnation()
    try:
        with trio.CancelScope() as incarnation.scope:
            try:
                actor = incarnation.actor = cell.build()
                async with trio.open_nursery() as helpers:
                    incarnation.ctx = ActorContext(cell, incarnation, helpers, task_status)
                    await actor.run(incarnation.ctx)
                    helpers.cancel_scope.cancel()
            except* Exception as group:
                incarnation.failure = _leaf(group)
        if incarnation.injected is not None:
            incarnation.failure = incarnation.injected
    finally:
        if incarnation.ctx is not None:
            incarnation.ctx._close()
        if incarnation.failure is not None:
            cell.last_failure = Failure.from_exception(incarnation.failure)
        cell.state = State.FAILED if incarnation.failure is not None else State.STOPPED
        incarnation.exited.set()
    if not incarnation.ready:
        task_status.started(incarnation)
    elif not incarnation.stopping:
        on_exit(incarnation)


async def stop_incarnation(incarnation: Incarnation, timeout: float) -> None:
    """Stop gracefully, or cancel after ``timeout`` seconds; return once ended.

    Graceful means: the stop request ends ``ctx.messages()`` after the current
    message, ``on_stop`` runs, ``run`` returns. Helper tasks are cancelled
    when ``run`` returns either way. The cell ends up ``STOPPED``, or
    ``FAILED`` if the actor raised while stopping.
    """
    cell = incarnation.cell
    incarnation.stopping = True
    if not incarnation.exited.is_set():
        if incarnation.ctx is not None:
            incarnation.ctx._request_stop()
        with trio.move_on_after(timeout):
            await incarnation.exited.wait()
        if not incarnation.exited.is_set():
            incarnation.cancel()
            await incarnation.exited.wait()
    if cell.current is incarnation:
        cell.current = None
