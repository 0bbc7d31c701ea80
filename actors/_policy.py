"""Declarative supervision settings: what to restart, how often, how fast.

These are plain frozen values. A :class:`Supervisor` interprets them; nothing
here touches trio.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._actor import Actor


class Restart(enum.Enum):
    """When a supervisor restarts a child that ended (Erlang's restart types).

    ``PERMANENT``
        Always restarted, even after a normal return from ``run()``.
    ``TRANSIENT``
        Restarted only after a failure (an exception); a normal return
        removes the child.
    ``TEMPORARY``
        Never restarted: when it ends, for whatever reason, it is removed. It is
        also removed, not restarted, when a sibling's failure takes it down
        under ``ONE_FOR_ALL`` / ``REST_FOR_ONE``.
    """

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one of them fails.

    ``ONE_FOR_ONE``
        Only the failed child.
    ``ONE_FOR_ALL``
        All children: the others are stopped in reverse start order, then all
        are started again in order.
    ``REST_FOR_ONE``
        The failed child and those started after it: the later ones are
        stopped in reverse order, then the failed one and they are started
        again in order. Use it when later children depend on earlier ones.
    """

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class State(enum.Enum):
    """The life-cycle state of a child slot, as shown by introspection.

    ``STARTING``: queued for a start or running ``setup`` (not yet ready).
    ``RUNNING``: ready and serving. ``BACKING_OFF``: waiting out the restart
    delay. ``STOPPING``: asked to stop, finishing its current message and
    ``on_stop``. ``STOPPED``: ended without failure. ``FAILED``: ended with an
    exception and not (yet) restarted.
    """

    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class Backoff:
    """Exponential backoff with jitter between the restarts of one child.

    The k-th consecutive restart (k = 0, 1, ...) waits::

        min(maximum, initial * multiplier**k) * (1 + u),  u ~ uniform(-jitter, +jitter)

    so ``jitter`` is a fraction (0.2 means ±20 %), applied after the cap. A
    child that stayed up for ``reset_after`` seconds before failing starts
    again from k = 0. Children restarted only because a sibling failed
    (``ONE_FOR_ALL`` / ``REST_FOR_ONE``) share the failed child's delay.
    """

    initial: float = attrs.field(default=0.1, validator=_non_negative)
    maximum: float = attrs.field(default=10.0, validator=_non_negative)
    multiplier: float = 2.0
    jitter: float = 0.2
    reset_after: float = attrs.field(default=30.0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if not self.multiplier >= 1.0:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay before restart number ``attempt`` (0-based), drawing one
        ``rng.uniform`` for the jitter."""
        try:
            base = min(self.maximum, self.initial * self.multiplier**attempt)
        except OverflowError:
            base = self.maximum
        return base * (1.0 + rng.uniform(-self.jitter, self.jitter))


@attrs.frozen
class Intensity:
    """Restart intensity: the most restarts a supervisor tolerates.

    When a restart would make it *more than* ``max_restarts`` restarts within
    the last ``within`` seconds (on trio's clock, so virtual time works), the
    supervisor gives up instead: it stops all its children in reverse order
    and raises :class:`RestartIntensityExceeded` to its parent. Only restarts
    caused by a child ending count, once per event (not once per sibling taken
    down with it); temporary children and transient normal exits never count.
    """

    max_restarts: int = attrs.field(default=5, validator=_non_negative)
    within: float = 10.0

    def __attrs_post_init__(self) -> None:
        if not self.within > 0:
            raise ValueError(f"within must be > 0, got {self.within!r}")


def _valid_name(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a child name must be a non-empty string, got {value!r}")


@attrs.frozen
class ChildSpec:
    """How a supervisor runs one child.

    ``name``
        The child's registry name, global within the system (see the package
        docstring for the naming convention).
    ``factory``
        Builds a *fresh* :class:`Actor` for every incarnation: a restart must
        not inherit the state that failed. Keep it cheap and free of I/O (that
        belongs in ``setup``); the first instance is built when the child is
        added, so its mailbox can accept messages before it starts.
    ``restart``
        See :class:`Restart`.
    ``shutdown_timeout``
        Seconds a graceful stop may take before the child is cancelled. Give a
        supervisor enough for all its children, or ``math.inf`` (as
        :meth:`Supervisor.spec` does).
    """

    name: str = attrs.field(validator=_valid_name)
    factory: Callable[[], Actor]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = attrs.field(default=5.0, validator=_non_negative)
