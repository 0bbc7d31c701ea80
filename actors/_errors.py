"""The exceptions raised by the actor runtime.

Every one of them derives from :class:`ActorError`, so a caller can catch the
whole family at once; several also derive from the matching builtin
(``LookupError``, ``ValueError``, ``TimeoutError``) so that generic handlers
keep working.
"""

from __future__ import annotations


class ActorError(Exception):
    """Base class of every exception defined by this package."""


class ActorNotFound(ActorError, LookupError):
    """No actor is registered under ``name`` (never started, or removed).

    A child that is merely restarting (backing off) is still registered: its
    mailbox keeps accepting messages, so sends to it do *not* raise this.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"no actor named {name!r}")
        self.name = name


class ActorNotRunning(ActorError):
    """The actor exists but cannot do what was asked right now.

    Raised by :meth:`Supervisor.start_child` / :meth:`Supervisor.stop_child`
    when the supervisor has not finished starting or is shutting down, by
    :meth:`Registry.lookup_supervisor` when the supervisor has no running
    incarnation, and by :meth:`Registry.fail_actor` on an actor that is not
    running.
    """


class DuplicateName(ActorError, ValueError):
    """A child was started under a name that is already registered.

    Names are global within one :class:`ActorSystem` (see the package
    docstring), so the clash may be with an actor anywhere in the tree.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"an actor named {name!r} is already registered")
        self.name = name


class MailboxFull(ActorError):
    """:meth:`ActorRef.send_nowait` found the target's bounded mailbox full."""

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__(f"mailbox of {name!r} is full ({capacity} messages)")
        self.name = name
        self.capacity = capacity


class RequestTimeout(ActorError, TimeoutError):
    """:meth:`ActorRef.request` got no reply within its timeout.

    The request may still be handled later; its reply is then dropped.
    """


class ChildStartFailed(ActorError):
    """:meth:`Supervisor.start_child`: the new child failed before it was ready.

    The child's own exception is attached as ``__cause__``. The child is not
    kept, and the supervisor is unaffected (the failure does not count
    towards its restart intensity).
    """


class RestartIntensityExceeded(ActorError):
    """A supervisor saw more restarts than its :class:`Intensity` allows.

    The supervisor has already stopped all its children (in reverse start
    order) when this propagates; its parent treats it as the failure of that
    supervisor and applies its own policy. ``__cause__`` is the failure that
    tipped it over.
    """


class InjectedFailure(ActorError):
    """The failure raised into an actor by :meth:`Registry.fail_actor`."""


class SubscriptionClosed(ActorError):
    """A :class:`Subscription` is closed and has nothing left to deliver.

    ``reason`` is ``"overflow"`` when a QUEUE subscriber fell ``capacity``
    items behind, ``"closed"`` when the subscription was closed by its owner.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"subscription closed: {reason}")
        self.reason = reason
