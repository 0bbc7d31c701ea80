"""Addressing actors: stable references by name, and request/reply."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from ._errors import ActorNotFound, RequestTimeout

if TYPE_CHECKING:
    from ._cell import Cell
    from ._registry import Registry

T = TypeVar("T")

# What travels on a reply channel: (True, value) or (False, exception).
_Outcome = tuple[bool, object]


class Reply(Generic[T]):
    """The answer slot of one request, carried inside the request message.

    A handler calls :meth:`send` or :meth:`fail` exactly once; neither ever
    blocks. The value travels on a one-slot memory channel back to the
    requester. If the requester has already given up (timeout, cancellation)
    the answer is silently dropped: a late reply is never an error for the
    handler.
    """

    __slots__ = ("_channel", "_used")

    def __init__(self, channel: trio.MemorySendChannel[_Outcome]) -> None:
        self._channel = channel
        self._used = False

    def send(self, value: T) -> None:
        """Answer with ``value``. Raises ``RuntimeError`` if already answered."""
        self._deliver((True, value))

    def fail(self, exc: BaseException) -> None:
        """Answer with an exception, raised in the requester."""
        self._deliver((False, exc))

    @property
    def answered(self) -> bool:
        return self._used

    def _deliver(self, outcome: _Outcome) -> None:
        if self._used:
            raise RuntimeError("this Reply has already been answered")
        self._used = True
        try:
            self._channel.send_nowait(outcome)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the requester stopped waiting
        finally:
            self._channel.close()


class ActorRef:
    """A stable handle on the actor registered under ``name``.

    It resolves the name on every use, so it stays valid across restarts:
    messages go to the child's *slot*, whose mailbox survives restarts (queued
    messages wait for the next incarnation). Cheap to create; two refs to the
    same name in the same registry are equal.
    """

    __slots__ = ("name", "_registry", "_sender")

    def __init__(self, registry: Registry, name: str, sender: Cell | None = None) -> None:
        self.name = name
        self._registry = registry
        # The slot whose ``messages_out`` counts sends made through this ref.
        self._sender = sender

    def _target(self) -> Cell:
        cell = self._registry._cells.get(self.name)
        if cell is None:
            raise ActorNotFound(self.name)
        return cell

    def send_nowait(self, msg: object) -> None:
        """Queue ``msg`` in the mailbox now.

        Raises :class:`MailboxFull` if the mailbox is full and
        :class:`ActorNotFound` if no such actor is registered.
        """
        self._target().deliver_nowait(msg)
        if self._sender is not None:
            self._sender.messages_out += 1

    async def send(self, msg: object) -> None:
        """Queue ``msg``, waiting for room in the mailbox if it is full.

        Raises :class:`ActorNotFound` if the actor is not registered, or is
        removed while this waits.
        """
        await self._target().deliver(msg)
        if self._sender is not None:
            self._sender.messages_out += 1

    async def request(self, make_msg: Callable[[Reply[T]], object], *, timeout: float) -> T:
        """Send ``make_msg(reply)`` and wait for the handler to answer ``reply``.

        ``timeout`` bounds the whole exchange, including waiting for mailbox
        room; on expiry :class:`RequestTimeout` is raised and a later answer is
        dropped. If the handler calls ``reply.fail(exc)``, ``exc`` is raised
        here. If the actor fails without answering, this waits out the timeout
        (as in Akka's ask pattern).
        """
        send_channel, receive_channel = trio.open_memory_channel[_Outcome](1)
        msg = make_msg(Reply(send_channel))
        with receive_channel:
            with trio.move_on_after(timeout):
                await self.send(msg)
                ok, payload = await receive_channel.receive()
                if ok:
                    return payload  # type: ignore[return-value]
                raise payload  # type: ignore[misc]
        raise RequestTimeout(f"{self.name!r} did not reply within {timeout} s")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ActorRef)
            and other.name == self.name
            and other._registry is self._registry
        )

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r}>"
