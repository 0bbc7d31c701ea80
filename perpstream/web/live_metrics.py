"""Scrape-time metrics over the live actor tree, the sources and the connection guard.

Read when ``/metrics`` is scraped, never copied continuously. Labels stay
bounded: an actor is labelled by its name only when the configuration
bounds it (markets, scanners, supervisors); the one actor per watched
account (``sessions/0x…``) is summed into ``perpstream_sessions_*`` so no
account appears on the public endpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from perpstream.web.context import AppContext
from perpstream.web.metrics import LiveRow

__all__ = ["SessionRestarts", "actor_rows", "guard_rows", "install_live_metrics"]


def _walk(node: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    if node is None:
        return
    yield node
    for child in node.get("children", ()) or ():
        yield from _walk(child)


class SessionRestarts:
    """A running total of user-session restarts that only grows, as a counter must.

    Sessions come and go, and a session's own count starts again at 0, so
    their sum over the live tree would fall. This keeps the count last seen
    per live session and adds only increases; a session that is gone leaves
    its restarts in the total. Restarts between a session's last scrape and
    its end are not seen: the total is a lower bound.
    """

    def __init__(self) -> None:
        self.total = 0
        self._seen: dict[str, int] = {}

    def update(self, counts: dict[str, int]) -> int:
        for name, restarts in counts.items():
            before = self._seen.get(name, 0)
            self.total += restarts - before if restarts >= before else restarts  # fewer: a new session
        self._seen = dict(counts)
        return self.total


def actor_rows(root: dict[str, Any] | None, session_restarts: SessionRestarts) -> Iterator[LiveRow]:
    """Restarts (counters) and mailbox depth per bounded actor; sessions summed."""
    sessions: dict[str, int] = {}
    session_mailbox_max = 0
    for node in _walk(root):
        if node["kind"] == "session":
            sessions[node["name"]] = node["restarts"]
            session_mailbox_max = max(session_mailbox_max, node["mailbox"]["used"])
            continue
        labels = {"actor": node["name"]}
        yield ("perpstream_actor_restarts", "Restarts per actor slot", "counter", labels, node["restarts"])
        yield ("perpstream_actor_mailbox_depth", "Messages waiting in an actor's mailbox", "gauge", labels,
               node["mailbox"]["used"])
    yield ("perpstream_sessions", "User sessions running (one per watched account)", "gauge", {}, len(sessions))
    yield ("perpstream_session_restarts", "Restarts of user sessions, all sessions together", "counter", {},
           session_restarts.update(sessions))
    yield ("perpstream_session_mailbox_depth_max", "Deepest mailbox among the user sessions", "gauge", {},
           session_mailbox_max)


def guard_rows(guard: dict[str, int]) -> Iterator[LiveRow]:
    """What the connection guard counted (each only if the guard counts it)."""
    for name, help_text in (("cut_slow", "Connections cut because a send outlasted ws.send_timeout_s"),
                            ("cut_idle", "Connections cut after silence from the client"),
                            ("protocol_errors", "Connections closed for a protocol error below the message layer")):
        if name in guard:
            yield (f"perpstream_ws_{name}", help_text, "counter", {}, guard[name])


def install_live_metrics(
    context: AppContext,
    *,
    feed_status: Callable[[], Any],
    indexer_status: Callable[[], Any] | None,
) -> None:
    """Register the scrape-time metrics of a daemon."""

    session_restarts = SessionRestarts()

    def live() -> Iterator[LiveRow]:
        now = context.clock.now()
        yield from actor_rows(context.registry.snapshot().get("root"), session_restarts)  # type: ignore[arg-type]
        yield from guard_rows(context.guard_stats())
        yield ("perpstream_limits_clients", "Client addresses holding connections or owing a cooldown", "gauge",
               {}, len(context.limits))
        yield ("perpstream_limits_cooldowns", "Client addresses cooled down after repeated limit hits", "counter",
               {}, context.limits.cooldowns)
        feed = feed_status()
        yield ("perpstream_feed_connected", "1 while the price feed is connected", "gauge", {"source": feed.source},
               1.0 if feed.connected else 0.0)
        for feed_id, publish_time in feed.newest_publish_times.items():
            yield ("perpstream_feed_age_seconds", "Age of the newest price by publish_time", "gauge",
                   {"feed_id": feed_id}, max(0.0, now - publish_time))
        if indexer_status is not None and (status := indexer_status()) is not None:
            if status.lag is not None:
                yield ("perpstream_indexer_lag_blocks",
                       "Blocks between chain head and indexed cursor (negative: head below the cursor)", "gauge", {},
                       status.lag)
            yield ("perpstream_indexer_halted", "1 once the indexer stopped on an error retrying cannot fix", "gauge",
                   {}, 0.0 if status.halted is None else 1.0)
            yield ("perpstream_indexer_events_applied", "Chain events applied", "counter", {}, status.events_applied)
            yield ("perpstream_indexer_reorgs", "Reorgs handled", "counter", {}, status.reorgs)

    context.metrics.add_live_state(live)
