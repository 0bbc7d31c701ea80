"""Readiness checks over the live actor tree and sources."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from perpstream.domain import normalize_feed_id
from perpstream.services.queries import MarketQueries, MarketUnavailable
from perpstream.web.context import AppContext
from perpstream.web.live_metrics import install_live_metrics

__all__ = ["install_health", "walk_actors"]

# An indexer more than this many blocks behind the head is "not caught up".
MAX_INDEXER_LAG = 10


def walk_actors(node: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Every node of a registry snapshot's tree, depth first."""
    if node is None:
        return
    yield node
    for child in node.get("children", ()) or ():
        yield from walk_actors(child)


def _markets_check(
    context: AppContext, feed_status: Callable[[], Any]
) -> Callable[[], Awaitable[list[str]]]:
    feed_of = {m.id: normalize_feed_id(m.pyth_feed_id) for m in context.config.markets}

    async def check() -> list[str]:
        reasons = []
        queries = MarketQueries.of(context.registry, context.clock.now_ms)
        missing = set(feed_status().missing_feeds)
        for market_id in context.market_ids:
            if feed_of.get(market_id) in missing:
                reasons.append(f"market {market_id}: the oracle does not serve its feed {feed_of[market_id]} "
                               "(unknown or delisted); check markets.pyth_feed_id")
                continue
            try:
                price = queries.price_message(market_id)
            except MarketUnavailable:
                reasons.append(f"market {market_id} is not running")
                continue
            if price is None:
                reasons.append(f"market {market_id} has no price yet")
            elif price.stale:
                reasons.append(f"market {market_id} price is stale (age {price.age_ms} ms)")
        return reasons

    return check


def _actors_check(context: AppContext) -> Callable[[], Awaitable[list[str]]]:
    async def check() -> list[str]:
        reasons = []
        for node in walk_actors(context.registry.snapshot().get("root")):  # type: ignore[arg-type]
            # One user's crashing session must not take every user's daemon out
            # of a load balancer: sessions are left out of readiness.
            if node["kind"] == "session":
                continue
            if node["state"] in ("backing_off", "failed", "starting"):
                failure = node.get("last_failure") or {}
                why = f": {failure.get('type')}: {failure.get('message')}" if failure else ""
                reasons.append(f"actor {node['name']} is {node['state']}{why}")
        return reasons

    return check


def _indexer_check(status: Callable[[], Any]) -> Callable[[], Awaitable[list[str]]]:
    async def check() -> list[str]:
        current = status()
        if current is not None and current.halted is not None:
            return [f"chain indexer stopped: {current.halted}. The way out: {current.remedy}"]
        if current is None or not current.prepared:
            return ["chain indexer has not started"]
        lag = current.lag
        if lag is None:
            return ["chain indexer has not read the chain head yet"]
        if lag < 0:
            return [f"chain head {current.head_block} is below the indexed block {current.indexed_block}: "
                    "the chain shrank or was reset, or the node is behind"]
        if lag > MAX_INDEXER_LAG:
            return [f"chain indexer is {lag} blocks behind the head"]
        if current.consecutive_failures:
            return [f"chain indexer is failing: {current.last_error}"]
        return []

    return check


def install_health(
    context: AppContext,
    *,
    feed_status: Callable[[], Any],
    indexer_status: Callable[[], Any] | None,
) -> None:
    """Add the readiness checks of a daemon, and its scrape-time metrics (perpstream.web.live_metrics)."""
    context.readiness_checks.append(_markets_check(context, feed_status))
    context.readiness_checks.append(_actors_check(context))
    if indexer_status is not None:
        context.readiness_checks.append(_indexer_check(indexer_status))

    install_live_metrics(context, feed_status=feed_status, indexer_status=indexer_status)
