"""The bus's long-running tasks as supervised actors, so the tree shows (and restarts) them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors import Actor, ActorContext

__all__ = ["TaskActor"]


class TaskActor(Actor):
    """Runs one never-ending task (the relay's writer, an edge's reader); ``describe`` reports on it."""

    kind = "bus"

    def __init__(self, task: Callable[[], Awaitable[None]], describe: Callable[[], dict[str, object]]) -> None:
        self._task = task
        self._describe = describe

    async def setup(self, ctx: ActorContext) -> None:
        ctx.nursery.start_soon(self._task)

    def describe(self) -> dict[str, object]:
        return self._describe()
