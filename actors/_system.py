"""The actor system: a registry plus one root child, run in a trio task."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio

from ._cell import Cell, Incarnation, run_incarnation, stop_incarnation
from ._policy import ChildSpec
from ._registry import Registry


def _root_exit(_: Incarnation) -> None:
    """The root's exit is awaited by :meth:`ActorSystem.run` directly."""


class ActorSystem:
    """One actor tree and its :class:`Registry`.

    Run it with :func:`open_system`, or in a nursery of your own::

        system = ActorSystem()
        await nursery.start(system.run, Supervisor.spec("root", children))
        ...
        await system.stop()

    The root is not restarted: if it fails, :meth:`run` raises its exception
    (for a root supervisor that gave up, :class:`RestartIntensityExceeded`).
    """

    def __init__(self, registry: Registry | None = None) -> None:
        """``registry``: one made beforehand, so objects outside the tree can be wired to it."""
        self.registry = registry if registry is not None else Registry()
        self._root: Cell | None = None

    async def run(self, root: ChildSpec, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start ``root``, signal ``task_status`` once it is ready, and run
        until it ends (normally after :meth:`stop`). Raises the root's
        failure, including one that happens before it is ready."""
        if self._root is not None:
            raise RuntimeError("an ActorSystem runs only once")
        cell = self._root = Cell(root, self.registry)
        self.registry._register(cell)
        self.registry._root = cell
        try:
            async with trio.open_nursery() as nursery:
                ended: Incarnation | None = await nursery.start(run_incarnation, cell, _root_exit)
                if ended is None:
                    task_status.started()
                    running = cell.current
                    assert running is not None
                    await running.exited.wait()
                    ended = running
        finally:
            self.registry._unregister(cell)
            cell.close()
        if ended.failure is not None:
            raise ended.failure
        if not ended.ready:
            task_status.started()

    async def stop(self) -> None:
        """Stop the tree gracefully: the root gets its ``shutdown_timeout``
        (a root supervisor stops its children in reverse order, each within
        its own), then is cancelled. Returns when it has ended; a no-op if it
        is not running."""
        cell = self._root
        if cell is None or cell.current is None:
            return
        await stop_incarnation(cell.current, cell.spec.shutdown_timeout)


@contextlib.asynccontextmanager
async def open_system(root: ChildSpec, *, registry: Registry | None = None) -> AsyncIterator[ActorSystem]:
    """Run an :class:`ActorSystem` for the duration of an ``async with``.

    Entering starts ``root`` and waits until it is ready (a root supervisor is
    ready once all its children are). Leaving stops the tree gracefully. If
    the root fails meanwhile, the body is cancelled and the failure
    propagates, inside an ``ExceptionGroup`` as from any nursery. Use
    :meth:`Supervisor.spec` for a root supervisor, so that its shutdown is
    bounded by its children's timeouts rather than by a single one.
    """
    system = ActorSystem(registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run, root)
        try:
            yield system
        finally:
            await system.stop()
