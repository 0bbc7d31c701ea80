"""Introspection: the actor tree and the topics as plain, JSON-ready data.

The shape, as produced by :meth:`Registry.snapshot`::

    {
      "time": 1234.5,             # trio.current_time()
      "wall_time": 1.7e9,         # Unix time
      "root": <node> | null,
      "topics": [{"name", "policy", "capacity", "subscribers", "published"}, ...]
    }

    <node> = {
      "name", "kind",
      "state":        "starting" | "running" | "backing_off" | "stopping" | "stopped" | "failed",
      "restart":      "permanent" | "transient" | "temporary",
      "incarnation":  current (or last) incarnation number, 0 before the first start,
      "restarts":     incarnations after the first,
      "last_failure": {"type", "message", "at" (trio time), "wall_time"} | null,
      "mailbox":      {"used", "capacity"},
      "messages_in":  messages accepted into the mailbox,
      "messages_out": sends through ctx.ref(...) refs + publishes through ctx.topic(...) views,
      "topics":       [{"name", "subscribers"}] obtained through ctx.topic(...),
      "details":      actor.describe(),
      # while backing off:
      "restart_in":   seconds until the restart,
      # supervisors only:
      "strategy", "intensity": {"max_restarts", "within"}, "children": [<node>, ...]
    }

Counters are kept per child slot, so they accumulate across restarts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ._actor import Actor
from ._cell import Cell
from ._policy import State
from ._supervisor import Supervisor
from ._topic import Topic


def snapshot(root: Cell | None, topics: Iterable[Topic[Any]], *, now: float) -> dict[str, Any]:
    return {
        "time": now,
        "wall_time": time.time(),
        "root": None if root is None else describe_cell(root, now=now),
        "topics": [describe_topic(topic) for topic in topics],
    }


def describe_topic(topic: Topic[Any]) -> dict[str, Any]:
    return {
        "name": topic.name,
        "policy": topic.policy.value,
        "capacity": topic.capacity,
        "subscribers": topic.subscriber_count,
        "published": topic.published,
    }


def describe_cell(cell: Cell, *, now: float, restart_at: float | None = None) -> dict[str, Any]:
    actor = cell.actor
    node: dict[str, Any] = {
        "name": cell.name,
        "kind": actor.kind,
        "state": cell.state.value,
        "restart": cell.spec.restart.value,
        "incarnation": cell.incarnations,
        "restarts": max(0, cell.incarnations - 1),
        "last_failure": None if cell.last_failure is None else cell.last_failure.as_dict(),
        "mailbox": {"used": cell.mailbox_used, "capacity": cell.capacity},
        "messages_in": cell.messages_in,
        "messages_out": cell.messages_out,
        "topics": [{"name": t.name, "subscribers": t.subscriber_count} for t in cell.topics.values()],
        "details": _details(actor),
    }
    if cell.state is State.BACKING_OFF and restart_at is not None:
        node["restart_in"] = max(0.0, restart_at - now)
    if isinstance(actor, Supervisor):
        node["strategy"] = actor.strategy.value
        node["intensity"] = {
            "max_restarts": actor.intensity.max_restarts,
            "within": actor.intensity.within,
        }
        node["children"] = [
            describe_cell(child.cell, now=now, restart_at=child.restart_at) for child in actor._children
        ]
    return node


def _details(actor: Actor) -> dict[str, Any]:
    """``actor.describe()``, never letting a broken one break the snapshot."""
    try:
        return dict(actor.describe())
    except Exception as error:
        return {"describe_error": f"{type(error).__name__}: {error}"}
