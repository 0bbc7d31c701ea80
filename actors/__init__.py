"""A small supervised-actor runtime for trio, after Erlang/OTP and Akka.

An *actor* is a trio task that owns its state and reads one bounded mailbox;
others reach it only through messages, by name (:class:`ActorRef`). A
*supervisor* is an actor that starts children in order, watches them, and
restarts them according to a restart type, a strategy, a restart intensity
and an exponential backoff with jitter, shutting them down in reverse order.
*Topics* fan items out to many subscribers without ever blocking the
publisher. The whole tree can be inspected as plain data.

Minimal use::

    import actors

    class Counter(actors.Actor):
        async def setup(self, ctx):
            self.total = 0
            self.out = ctx.topic("counter/total")

        async def handle(self, msg):
            self.total += msg
            self.out.publish(self.total)

    root = actors.Supervisor.spec("root", [actors.ChildSpec("counter", Counter)])
    async with actors.open_system(root) as system:
        system.registry.ref("counter").send_nowait(5)

Naming: actor names are flat and global within a system. A child is
registered under exactly its ``ChildSpec.name``; a ``/``-separated convention
such as ``"markets/btc-usdc-perp"`` is encouraged but not interpreted.

Time: everything uses trio's clock, so whole trees run on
``trio.testing.MockClock(autojump_threshold=0)`` deterministically.
"""

from ._actor import Actor, ActorContext
from ._errors import (
    ActorError,
    ActorNotFound,
    ActorNotRunning,
    ChildStartFailed,
    DuplicateName,
    InjectedFailure,
    MailboxFull,
    RequestTimeout,
    RestartIntensityExceeded,
    SubscriptionClosed,
)
from ._policy import Backoff, ChildSpec, Intensity, Restart, State, Strategy
from ._ref import ActorRef, Reply
from ._registry import Registry
from ._supervisor import Supervisor
from ._system import ActorSystem, open_system
from ._topic import Delivery, Policy, Sink, Subscription, SubscriptionStats, Topic

__all__ = [
    "Actor",
    "ActorContext",
    "ActorError",
    "ActorNotFound",
    "ActorNotRunning",
    "ActorRef",
    "ActorSystem",
    "Backoff",
    "ChildSpec",
    "ChildStartFailed",
    "Delivery",
    "DuplicateName",
    "InjectedFailure",
    "Intensity",
    "MailboxFull",
    "Policy",
    "Registry",
    "Reply",
    "RequestTimeout",
    "Restart",
    "RestartIntensityExceeded",
    "Sink",
    "State",
    "Strategy",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionStats",
    "Supervisor",
    "Topic",
    "open_system",
]

