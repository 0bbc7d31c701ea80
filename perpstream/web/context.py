"""What the web layer shares: config, the actor registry, clock, metrics, open connections, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import attrs

from actors import Registry
from perpstream.clock import WallClock
from perpstream.config import Config
from perpstream.history import StreamHistory, StreamRecovery
from perpstream.protocol import Channel
from perpstream.services.open_positions import OpenPositionsSource, from_markets
from perpstream.services.queries import RESTART_WAIT_S, MarketQueries
from perpstream.services.session import acquire_session
from perpstream.services.topics import SESSION_DIRECTORY, StreamTopics
from perpstream.streams import StreamKey
from perpstream.web.limits import ClientAddresses, ClientLimits
from perpstream.web.metrics import Metrics
from perpstream.web.stream import GuardedStream

__all__ = ["AppContext"]


@attrs.define(eq=False)
class AppContext:
    """Built once per daemon and handed to ``create_app``."""

    config: Config
    registry: Registry
    clock: WallClock
    metrics: Metrics
    connections: set[object] = attrs.field(factory=set)
    # What each client address holds, across its connections (perpstream.web.limits).
    limits: ClientLimits = attrs.field(default=attrs.Factory(
        lambda self: ClientLimits(self.config.limits, max_connections=self.config.ws.max_connections_per_client),
        takes_self=True))
    addresses: ClientAddresses = attrs.field(default=attrs.Factory(
        lambda self: ClientAddresses(self.config.limits.trusted_proxies), takes_self=True))
    # Each check returns the reasons the daemon is not ready (empty: fine).
    readiness_checks: list[Callable[[], Awaitable[list[str]]]] = attrs.field(factory=list)
    debug_token: str | None = None
    guard_stats: Callable[[], dict[str, int]] = lambda: {}
    # The guarded socket stream of a client (by ASGI scope "client"), if served by our server.
    stream_of: Callable[[Any], GuardedStream | None] = lambda client: None
    # On an edge: keeps a stream flowing from the bus while it has subscribers.
    follow: Callable[[StreamKey], AbstractAsyncContextManager[None]] | None = None
    # What /debug/actors adds about the deployment (an edge names its bus and the active core).
    describe_deployment: Callable[[], Awaitable[dict[str, object]]] | None = None
    # Where resuming subscriptions read what they missed: the actor tree's history (the daemon passes it).
    history: StreamRecovery = attrs.field(default=attrs.Factory(
        lambda self: StreamHistory.in_memory(size=self.config.streams.history_size,
                                             ttl_s=self.config.streams.history_ttl_s, now_ms=self.clock.now_ms),
        takes_self=True))
    # Where /api/v1/positions gets every open position: these markets (an edge reads what the core published).
    open_positions: OpenPositionsSource = attrs.field(default=attrs.Factory(
        lambda self: partial(from_markets, MarketQueries.of(self.registry, self.clock.now_ms), self.market_ids,
                             now_ms=self.clock.now_ms, restart_wait_s=RESTART_WAIT_S),
        takes_self=True))

    @property
    def market_ids(self) -> list[str]:
        return [m.id for m in self.config.markets]

    def topics(self, key: StreamKey) -> StreamTopics:
        return StreamTopics.of(self.registry, key, self.config.ws.event_buffer)

    def interval_ms(self, channel: Channel) -> int:
        streams = self.config.streams
        return {
            Channel.PRICES: streams.prices_interval_ms,
            Channel.POSITIONS: streams.positions_interval_ms,
            Channel.LIQUIDATIONS: streams.liquidations_interval_ms,
            Channel.MARKET_STATS: streams.market_stats_interval_ms,
        }.get(channel, 0)

    @asynccontextmanager
    async def attach(self, key: StreamKey) -> AsyncIterator[None]:
        """Whatever a stream needs running while someone watches it (a user session; on an edge, the stream)."""
        if self.follow is not None:
            async with self.follow(key):
                yield
        elif key.channel is Channel.POSITIONS and key.key is not None:
            async with acquire_session(self.registry.ref(SESSION_DIRECTORY), key.key):
                yield
        else:
            yield
