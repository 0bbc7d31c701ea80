"""Scrape-time metrics over the live actor tree, the sources and the open connections.

Read when ``/metrics`` is scraped, never copied continuously. Labels stay
bounded: an actor is labelled by its name only when the configuration
bounds it (markets, scanners, supervisors); the one actor per watched
account (``sessions/0x…``) is summed into ``perpstream_sessions_*`` so no
account appears on the public endpoint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from perpstream.web.context import AppContext
from perpstream.web.metrics import LiveRow

__all__ = ["install_live_metrics", "actor_rows", "connection_rows"]


def _walk(node: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    if node is None:
        return
    yield node
    for child in node.get("children", ()) or ():
        yield from _walk(child)


def actor_rows(root: dict[str, Any] | None) -> Iterator[LiveRow]:
    """Restarts (counters) and mailbox depth per bounded actor; sessions summed."""
    sessions = session_restarts = 0
    session_mailbox_max = 0
    for node in _walk(root):
        if node["kind"] == "session":
            sessions += 1
            session_restarts += node["restarts"]
            session_mailbox_max = max(session_mailbox_max, node["mailbox"]["used"])
            continue
        labels = {"actor": node["name"]}
        yield ("perpstream_actor_restarts", "Restarts per actor slot", "counter", labels, node["restarts"])
        yield ("perpstream_actor_mailbox_depth", "Messages waiting in an actor's mailbox", "gauge", labels,
               node["mailbox"]["used"])
    yield ("perpstream_sessions", "User sessions running (one per watched account)", "gauge", {}, sessions)
    yield ("perpstream_session_restarts", "Restarts of the user sessions now running, summed", "counter", {},
           session_restarts)
    yield ("perpstream_session_mailbox_depth_max", "Deepest mailbox among the user sessions", "gauge", {},
           session_mailbox_max)


def connection_rows(connections: Iterable[object], guard: dict[str, int]) -> Iterator[LiveRow]:
    """Open subscriptions per channel, and what the connection guard counted."""
    per_channel: Counter[str] = Counter()
    for connection in connections:
        for stream in getattr(connection, "streams", {}).values():
            per_channel[stream.key.channel.value] += 1
    for channel, count in sorted(per_channel.items()):
        yield ("perpstream_ws_subscriptions", "Open subscriptions per channel", "gauge", {"channel": channel}, count)
    if not per_channel:
        yield ("perpstream_ws_subscriptions", "Open subscriptions per channel", "gauge", {"channel": "prices"}, 0)
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

    def live() -> Iterator[LiveRow]:
        now = context.clock.now()
        yield from actor_rows(context.registry.snapshot().get("root"))  # type: ignore[arg-type]
        yield from connection_rows(context.connections, context.guard_stats())
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
                yield ("perpstream_indexer_lag_blocks", "Blocks between chain head and indexed cursor", "gauge", {},
                       status.lag)
            yield ("perpstream_indexer_events_applied", "Chain events applied", "counter", {}, status.events_applied)
            yield ("perpstream_indexer_reorgs", "Reorgs handled", "counter", {}, status.reorgs)

    context.metrics.add_live_state(live)
