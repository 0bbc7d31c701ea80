"""The name service of one actor system: actors, supervisors and topics by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from . import _introspect
from ._errors import ActorNotFound, ActorNotRunning, DuplicateName
from ._ref import ActorRef
from ._supervisor import Supervisor
from ._topic import Policy, Topic

if TYPE_CHECKING:
    from ._cell import Cell


class Registry:
    """Names to actors and topics, for one :class:`ActorSystem`.

    Actor names are *flat and global*: a child is registered under exactly its
    :attr:`ChildSpec.name`, wherever it sits in the tree, and two live actors
    cannot share a name. Encode the hierarchy in the name by convention if you
    like (``"markets/btc-usdc-perp"``); the runtime neither derives nor checks
    it, so moving an actor in the tree never changes its address.

    A name is registered from the moment its supervisor adds the child (its
    mailbox accepts messages before the first start and while it backs off
    between restarts) until the child is removed: stopped with
    :meth:`Supervisor.stop_child`, ended for good (transient / temporary), or
    taken down with its supervisor's incarnation.
    """

    def __init__(self) -> None:
        self._cells: dict[str, Cell] = {}
        self._topics: dict[str, Topic[Any]] = {}
        self._root: Cell | None = None

    def ref(self, name: str) -> ActorRef:
        """A stable reference to the actor ``name``. Resolved at each send, so
        it may be created before the actor exists and stays valid across its
        restarts."""
        return ActorRef(self, name)

    def names(self) -> list[str]:
        """The registered actor names, in registration order."""
        return list(self._cells)

    def __contains__(self, name: object) -> bool:
        return name in self._cells

    def lookup_supervisor(self, name: str) -> Supervisor:
        """The running :class:`Supervisor` instance registered as ``name``,
        for :meth:`Supervisor.start_child` and friends.

        Look it up again when you need it rather than keeping it: a restarted
        supervisor is a new instance (which starts without the dynamic
        children of the old one). Raises :class:`ActorNotFound`,
        :class:`ActorNotRunning` (not running right now) or ``TypeError`` (not
        a supervisor).
        """
        cell = self._cell(name)
        incarnation = cell.current
        if incarnation is None or incarnation.actor is None or incarnation.stopping:
            raise ActorNotRunning(f"{name!r} is not running")
        if not isinstance(incarnation.actor, Supervisor):
            raise TypeError(f"{name!r} is a {incarnation.actor.kind}, not a Supervisor")
        return incarnation.actor

    def topic(self, name: str, *, policy: Policy = Policy.CONFLATE, capacity: int = 1) -> Topic[Any]:
        """Get or create the topic ``name``: the same object for the life of
        the system, whichever incarnation publishes to it.

        Every caller must declare it the same way: a different ``policy`` or
        ``capacity`` than the existing topic's raises ``ValueError``.
        """
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = Topic(name, policy=policy, capacity=capacity)
        elif topic.policy is not policy or topic.capacity != capacity:
            raise ValueError(
                f"topic {name!r} exists as {topic.policy.value}/{topic.capacity}, "
                f"not {policy.value}/{capacity}"
            )
        return topic

    def find_topic(self, name: str) -> Topic[Any] | None:
        """The topic ``name`` if it exists (unlike :meth:`topic`, never creates one)."""
        return self._topics.get(name)

    def discard_topic(self, name: str) -> bool:
        """Forget the topic ``name`` if nobody is subscribed; return whether it
        was removed. For topics tied to something that comes and goes (one per
        user session), which would otherwise accumulate. A later
        :meth:`topic` call creates a new object; views of the old one that a
        publisher still holds keep working, unseen."""
        topic = self._topics.get(name)
        if topic is None or topic.subscriber_count:
            return False
        del self._topics[name]
        return True

    def topics(self) -> list[Topic[Any]]:
        """All topics, in creation order."""
        return list(self._topics.values())

    def fail_actor(self, name: str, reason: str) -> None:
        """Make the actor ``name`` fail now, as if it had raised
        :class:`InjectedFailure` (``reason``): its supervisor applies its
        policy. For rehearsing recovery. Raises :class:`ActorNotFound` or
        :class:`ActorNotRunning`."""
        incarnation = self._cell(name).current
        if incarnation is None or incarnation.exited.is_set():
            raise ActorNotRunning(f"{name!r} is not running")
        incarnation.inject_failure(reason)

    def snapshot(self) -> dict[str, Any]:
        """The whole tree as JSON-ready data; see :mod:`actors._introspect`."""
        return _introspect.snapshot(self._root, self.topics(), now=trio.current_time())

    def _cell(self, name: str) -> Cell:
        cell = self._cells.get(name)
        if cell is None:
            raise ActorNotFound(name)
        return cell

    def _register(self, cell: Cell) -> None:
        if cell.name in self._cells:
            raise DuplicateName(cell.name)
        self._cells[cell.name] = cell

    def _unregister(self, cell: Cell) -> None:
        if self._cells.get(cell.name) is cell:
            del self._cells[cell.name]
