"""Supervisors: actors that start, watch and restart other actors (OTP style)."""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from ._actor import Actor, ActorContext
from ._cell import Cell, Incarnation, run_incarnation, stop_incarnation
from ._errors import (
    ActorNotFound,
    ActorNotRunning,
    ChildStartFailed,
    DuplicateName,
    RestartIntensityExceeded,
)
from ._policy import Backoff, ChildSpec, Intensity, Restart, State, Strategy
from ._ref import ActorRef


@attrs.define(eq=False)
class _Child:
    """A supervisor's record of one child: its cell plus restart scheduling."""

    cell: Cell
    # Start pending, not before this trio time; None when not pending.
    restart_at: float | None
    # Part of the initial start: it starts only after every earlier pending
    # child has started, even one that is backing off after failing in setup.
    ordered: bool
    # Consecutive restarts, the exponent of the backoff delay.
    backoff_level: int = 0


@attrs.define(eq=False)
class _Exited:
    """Event: an incarnation ended by itself after it was ready."""

    incarnation: Incarnation


class _Call:
    """A request from another task, answered once by the supervisor's loop."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def resolve(self, value: Any) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def reject(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def result(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class _StartChild(_Call):
    def __init__(self, spec: ChildSpec) -> None:
        super().__init__()
        self.spec = spec


class _StopChild(_Call):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


# Event: a graceful stop of the supervisor was requested. Events on the
# supervisor's channel are _Exited, _Call subclasses and _STOP.
_STOP = object()


@attrs.define(eq=False)
class _Start:
    """A child start in progress, for a stop request to interrupt."""

    cell: Cell
    scope: trio.CancelScope
    done: trio.Event = attrs.Factory(trio.Event)


class _Escalation(Exception):
    """Internal: the restart intensity was exceeded."""

    def __init__(self, child: str, failure: BaseException | None) -> None:
        super().__init__(child)
        self.child = child
        self.failure = failure


class _Interrupted(Exception):
    """Internal: a stop request prevented or cancelled a child's start."""


def _start_failed(name: str, cause: BaseException) -> ChildStartFailed:
    error = ChildStartFailed(f"{name!r} failed before it was ready: {type(cause).__name__}: {cause}")
    error.__cause__ = cause
    return error


class Supervisor(Actor):
    """An actor whose job is to keep its children running.

    Nest supervisors by giving one as a child:
    ``ChildSpec(name, factory=lambda: Supervisor(...))``, or
    :meth:`Supervisor.spec`, which also sets an unbounded shutdown timeout.

    **Start.** Children start in order, each one ready (``ctx.ready()``)
    before the next starts; the supervisor declares itself ready once all are.
    A child that fails before it is ready is treated like any failed child
    (restarted with backoff, counted towards the intensity), and the children
    after it wait.

    **Failure.** When a child ends, its :class:`Restart` type decides whether
    it is restarted. If so, the :class:`Strategy` picks who restarts with it;
    those are stopped in reverse start order, then all wait the failed
    child's :class:`Backoff` delay (state ``BACKING_OFF``) and start again in
    order. More restarts than the :class:`Intensity` allows make the
    supervisor stop all its children (reverse order) and raise
    :class:`RestartIntensityExceeded` to its own parent.

    **Stop.** A graceful stop stops the children in reverse start order, each
    given its ``shutdown_timeout`` to stop gracefully before it is
    cancelled. A cancellation from outside (``trio.Cancelled``) is never
    caught: it tears the subtree down at once, without restarts.

    **Dynamic children.** :meth:`start_child` and :meth:`stop_child` work on
    a running supervisor from any task. All changes to the set of children are
    made by the supervisor's own task, one at a time, so they never race with
    restarts.

    A supervisor takes no messages (its mailbox capacity is 0).
    """

    kind = "Supervisor"
    mailbox_capacity = 0

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: Intensity = Intensity(),
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
    ) -> None:
        names = [spec.name for spec in children]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate child names: {duplicates}")
        self.strategy = strategy
        self.intensity = intensity
        self.backoff = backoff
        self._specs = tuple(children)
        self._rng = rng if rng is not None else random.Random()
        self._ctx: ActorContext | None = None
        self._children: list[_Child] = []
        self._by_name: dict[str, _Child] = {}
        self._events_send, self._events = trio.open_memory_channel[object](math.inf)
        self._restart_times: collections.deque[float] = collections.deque()
        self._announced_ready = False
        self._accepting = False
        self._stopping = False
        # The start in progress (between nursery.start and ready), if any.
        self._starting: _Start | None = None
        self._calls: set[_Call] = set()

    @classmethod
    def spec(
        cls,
        name: str,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: Intensity = Intensity(),
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown_timeout: float = math.inf,
    ) -> ChildSpec:
        """A :class:`ChildSpec` running a fresh supervisor per incarnation.

        The shutdown timeout defaults to infinity, as OTP recommends for
        supervisors: each child already has its own.
        """
        children = tuple(children)

        def factory() -> Supervisor:
            return cls(children, strategy=strategy, intensity=intensity, backoff=backoff, rng=rng)

        return ChildSpec(name, factory, restart=restart, shutdown_timeout=shutdown_timeout)

    # -- public API, usable from any task -------------------------------------

    def child_names(self) -> list[str]:
        """Current children, in start order (including ones backing off)."""
        return [child.cell.name for child in self._children]

    async def start_child(self, spec: ChildSpec) -> ActorRef:
        """Add and start a child; return its ref once it is ready.

        The child goes after the existing ones (it is stopped first). Raises
        :class:`DuplicateName` if the name is taken, :class:`ChildStartFailed`
        if the child fails before it is ready (it is then not kept, and the
        supervisor is unaffected), :class:`ActorNotRunning` if the supervisor
        is not running. Cancelling the caller does not cancel the start.
        """
        return await self._call(_StartChild(spec))  # type: ignore[no-any-return]

    async def stop_child(self, name: str) -> None:
        """Stop a child gracefully (within its ``shutdown_timeout``, then
        cancelled) and remove it; its name is free again afterwards. Raises
        :class:`ActorNotFound` if it is not a child of this supervisor."""
        await self._call(_StopChild(name))

    async def _call(self, call: _Call) -> Any:
        if not self._accepting:
            raise ActorNotRunning("the supervisor is not running")
        self._calls.add(call)
        try:
            self._events_send.send_nowait(call)
            return await call.result()
        finally:
            self._calls.discard(call)

    # -- the supervisor's own task ---------------------------------------------

    async def run(self, ctx: ActorContext) -> None:
        if self._ctx is not None:
            raise RuntimeError("a Supervisor instance runs once: its ChildSpec factory must build a new one")
        self._ctx = ctx
        try:
            for spec in self._specs:
                self._add(spec, ordered=True)
            ctx.nursery.start_soon(self._watch_stop_request)
            try:
                await self._supervise()
            except _Escalation as escalation:
                self._accepting = False
                await self._stop_all()
                raise RestartIntensityExceeded(
                    f"{ctx.name}: more than {self.intensity.max_restarts} restarts within "
                    f"{self.intensity.within} s (the last for {escalation.child!r})"
                ) from escalation.failure
            await self._stop_all()
        finally:
            self._accepting = False
            for call in list(self._calls):
                call.reject(ActorNotRunning(f"supervisor {ctx.name!r} stopped"))
            for child in list(self._children):
                self._remove(child)

    async def _watch_stop_request(self) -> None:
        """On a stop request: wake the loop, and treat a child still starting
        like any child being stopped: ask it to stop, give it its
        ``shutdown_timeout`` to finish starting (it then stops at once), and
        cancel the start after that."""
        assert self._ctx is not None
        await self._ctx.wait_stop_requested()
        self._stopping = True
        self._accepting = False
        self._events_send.send_nowait(_STOP)
        starting = self._starting
        if starting is None:
            return
        incarnation = starting.cell.current
        if incarnation is not None and incarnation.ctx is not None:
            incarnation.ctx._request_stop()
        with trio.move_on_after(starting.cell.spec.shutdown_timeout):
            await starting.done.wait()
        starting.scope.cancel()

    async def _supervise(self) -> None:
        """The event loop: handle events, start due children, announce
        readiness, sleep until the next event or restart deadline."""
        assert self._ctx is not None
        while not self._stopping:
            try:
                event: object | None = self._events.receive_nowait()
            except trio.WouldBlock:
                event = None
            if event is not None:
                await self._handle(event)
                continue
            child = self._next_due()
            if child is not None:
                child.restart_at = None
                try:
                    incarnation = await self._launch(child.cell)
                except _Interrupted:
                    continue
                if incarnation is not None and not self._stopping:
                    await self._child_ended(child, incarnation)
                continue
            if not self._announced_ready and all(c.restart_at is None for c in self._children):
                self._announced_ready = True
                self._accepting = True
                self._ctx.ready()
            now = trio.current_time()
            deadline = min(
                (c.restart_at for c in self._children if c.restart_at is not None and c.restart_at > now),
                default=math.inf,
            )
            event = None
            with trio.move_on_at(deadline):
                event = await self._events.receive()
            if event is not None:
                await self._handle(event)

    def _next_due(self) -> _Child | None:
        now = trio.current_time()
        earlier_pending = False
        for child in self._children:
            if child.restart_at is None:
                continue
            if child.restart_at <= now and not (child.ordered and earlier_pending):
                return child
            earlier_pending = True
        return None

    async def _launch(self, cell: Cell) -> Incarnation | None:
        """Start an incarnation; ``None`` once it is ready, or the incarnation
        if it ended before. Raises :class:`_Interrupted` if the supervisor is
        stopping already, or if a stop request had to cancel the start."""
        assert self._ctx is not None
        if self._stopping:
            raise _Interrupted
        with trio.CancelScope() as scope:
            self._starting = starting = _Start(cell, scope)
            try:
                ended: Incarnation | None = await self._ctx.nursery.start(run_incarnation, cell, self._report_exit)
                return ended
            finally:
                self._starting = None
                starting.done.set()
        raise _Interrupted

    def _report_exit(self, incarnation: Incarnation) -> None:
        self._events_send.send_nowait(_Exited(incarnation))

    async def _handle(self, event: object) -> None:
        if isinstance(event, _Exited):
            incarnation = event.incarnation
            child = self._by_name.get(incarnation.cell.name)
            if child is not None and child.cell.current is incarnation:
                await self._child_ended(child, incarnation)
        elif isinstance(event, _StartChild):
            await self._start_dynamic(event)
        elif isinstance(event, _StopChild):
            await self._stop_dynamic(event)
        # _STOP only needs to wake the loop, which then sees self._stopping.

    async def _child_ended(self, child: _Child, incarnation: Incarnation) -> None:
        """Apply restart type, intensity, strategy and backoff to an exit."""
        cell = child.cell
        cell.current = None
        failure = incarnation.failure
        restart = cell.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and failure is None):
            self._remove(child)
            return
        now = trio.current_time()
        if incarnation.ready_at is not None and now - incarnation.ready_at >= self.backoff.reset_after:
            child.backoff_level = 0
        self._count_restart(now, cell.name, failure)
        group = self._restart_group(child)
        for other in reversed(group):
            if other is not child:
                await self._stop(other)
        delay = self.backoff.delay(child.backoff_level, self._rng)
        child.backoff_level += 1
        restart_at = trio.current_time() + delay
        for other in group:
            if other is not child and other.cell.spec.restart is Restart.TEMPORARY:
                self._remove(other)
                continue
            # Restarts are ordered by their deadlines alone: the group shares
            # the failed child's deadline, or keeps a later one of its own, so
            # no member can come back before one it was started after (ties go
            # in start order). Never shorten a pending backoff.
            if other.restart_at is None or other.restart_at < restart_at:
                other.restart_at = restart_at
            other.ordered = False
            other.cell.state = State.BACKING_OFF

    def _count_restart(self, now: float, name: str, failure: BaseException | None) -> None:
        times = self._restart_times
        times.append(now)
        horizon = now - self.intensity.within
        while times[0] <= horizon:
            times.popleft()
        if len(times) > self.intensity.max_restarts:
            raise _Escalation(name, failure)

    def _restart_group(self, child: _Child) -> list[_Child]:
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self._children)
        if self.strategy is Strategy.REST_FOR_ONE:
            return self._children[self._children.index(child) :]
        return [child]

    async def _stop(self, child: _Child) -> None:
        incarnation = child.cell.current
        if incarnation is None:  # not running: backing off, or failed
            if child.cell.state is not State.FAILED:
                child.cell.state = State.STOPPED
        else:
            await stop_incarnation(incarnation, child.cell.spec.shutdown_timeout)

    async def _stop_all(self) -> None:
        for child in reversed(list(self._children)):
            await self._stop(child)

    def _add(self, spec: ChildSpec, *, ordered: bool) -> _Child:
        assert self._ctx is not None
        cell = Cell(spec, self._ctx.registry)
        self._ctx.registry._register(cell)
        child = _Child(cell, restart_at=trio.current_time(), ordered=ordered)
        self._children.append(child)
        self._by_name[cell.name] = child
        return child

    def _remove(self, child: _Child) -> None:
        assert self._ctx is not None
        self._children.remove(child)
        del self._by_name[child.cell.name]
        self._ctx.registry._unregister(child.cell)
        child.cell.close()

    async def _start_dynamic(self, call: _StartChild) -> None:
        assert self._ctx is not None
        spec = call.spec
        try:
            child = self._add(spec, ordered=False)
        except DuplicateName as error:
            call.reject(error)
            return
        except Exception as error:  # the factory failed
            call.reject(_start_failed(spec.name, error))
            return
        child.restart_at = None
        try:
            incarnation = await self._launch(child.cell)
        except _Interrupted:
            self._remove(child)
            call.reject(ActorNotRunning(f"supervisor {self._ctx.name!r} is stopping"))
            return
        if incarnation is not None and incarnation.failure is not None:
            self._remove(child)
            call.reject(_start_failed(spec.name, incarnation.failure))
        elif self._stopping:  # it is stopped with its siblings
            call.reject(ActorNotRunning(f"supervisor {self._ctx.name!r} is stopping"))
        else:
            if incarnation is not None:  # returned normally before it was ready
                await self._child_ended(child, incarnation)
            call.resolve(ActorRef(self._ctx.registry, spec.name))

    async def _stop_dynamic(self, call: _StopChild) -> None:
        child = self._by_name.get(call.name)
        if child is None:
            call.reject(ActorNotFound(call.name))
            return
        await self._stop(child)
        self._remove(child)
        call.resolve(None)
