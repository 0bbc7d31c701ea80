"""The actor tree of the service (docs/architecture.md, "The actor tree").

::

    root (one_for_one)
    ├── markets     one_for_one: markets/{id} per configured market
    ├── chain       rest_for_one: the chain source's actors (indexer, dev chain, demo)
    ├── feed        the price source
    ├── scanner     liquidation candidates across markets
    ├── sessions    one_for_one, dynamic: sessions/{address}
    ├── session-directory
    └── history     trims the stream history by age

Markets start first: they rebuild from the position store, and the chain
actors deliver to them by name. The chain subtree restarts rest-for-one so a
restarted dev chain takes its indexer and demo traders with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from actors import Backoff, ChildSpec, Intensity, Strategy, Supervisor
from perpstream.clock import WallClock
from perpstream.config import Config, MarketConfig
from perpstream.feeds import PriceFeed
from perpstream.history import StreamHistory
from perpstream.domain import normalize_feed_id
from perpstream.services.feed_actor import PriceFeedActor
from perpstream.services.history_actor import HISTORY, HistoryKeeper
from perpstream.services.market import MarketActor, MarketSettings
from perpstream.services.scanner import LiquidationScanner
from perpstream.services.session import SessionDirectory, SessionSettings, session_spec
from perpstream.services.store import PositionSource
from perpstream.services.topics import FEED, SCANNER, SESSION_DIRECTORY, SESSIONS, market_name

__all__ = ["ServiceTree", "build_tree"]

# A market that fails more than 5 times in 30 s escalates; the root then
# restarts the markets subtree, and gives up (the daemon exits) past 3 in 60 s.
MARKETS_INTENSITY = Intensity(max_restarts=5, within=30.0)
ROOT_INTENSITY = Intensity(max_restarts=3, within=60.0)
RESTART_BACKOFF = Backoff(initial=0.2, maximum=10.0, multiplier=2.0, jitter=0.2, reset_after=30.0)


@attrs.frozen
class ServiceTree:
    root: ChildSpec
    market_names: tuple[str, ...]


def build_tree(
    config: Config,
    *,
    clock: WallClock,
    feed: PriceFeed,
    store: PositionSource,
    history: StreamHistory,
    chain: Sequence[ChildSpec] = (),
    extra: Sequence[ChildSpec] = (),
) -> ServiceTree:
    """The root spec of the daemon's actor tree; ``extra``: children a role adds (a core's bus actors)."""
    streams = config.streams
    market_ids = [m.id for m in config.markets]
    market_settings = MarketSettings(
        prices_interval_ms=streams.prices_interval_ms,
        market_stats_interval_ms=streams.market_stats_interval_ms,
        stale_after_ms=config.feed.stale_after_ms,
        event_buffer=config.ws.event_buffer,
        warning_rearm_margin=config.risk.warning_rearm_margin,
    )
    def market_factory(market: MarketConfig) -> Callable[[], MarketActor]:
        return lambda: MarketActor(market, settings=market_settings, store=store, clock=clock, history=history)

    markets = [
        ChildSpec(market_name(market.id), factory=market_factory(market), shutdown_timeout=5.0)
        for market in config.markets
    ]
    session_settings = SessionSettings(
        positions_interval_ms=streams.positions_interval_ms,
        grace_s=config.sessions.grace_s,
        event_buffer=config.ws.event_buffer,
    )
    children = [
        Supervisor.spec("markets", markets, strategy=Strategy.ONE_FOR_ONE,
                        intensity=MARKETS_INTENSITY, backoff=RESTART_BACKOFF),
    ]
    if chain:
        children.append(Supervisor.spec("chain", chain, strategy=Strategy.REST_FOR_ONE,
                                        intensity=MARKETS_INTENSITY, backoff=RESTART_BACKOFF))
    children += [
        ChildSpec(FEED, lambda: PriceFeedActor(
            feed, markets_by_feed_id={normalize_feed_id(m.pyth_feed_id): m.id for m in config.markets})),
        ChildSpec(SCANNER, lambda: LiquidationScanner(
            markets=market_ids, interval_ms=streams.liquidations_interval_ms,
            limit=streams.liquidation_candidates, event_buffer=config.ws.event_buffer, clock=clock,
            history=history)),
        Supervisor.spec(SESSIONS, [], strategy=Strategy.ONE_FOR_ONE,
                        intensity=Intensity(max_restarts=50, within=10.0), backoff=RESTART_BACKOFF),
        ChildSpec(SESSION_DIRECTORY, lambda: SessionDirectory(
            supervisor=SESSIONS,
            session_spec=lambda address: session_spec(
                address, markets=market_ids, settings=session_settings, clock=clock, history=history),
            grace_s=config.sessions.grace_s,
        )),
        ChildSpec(HISTORY, lambda: HistoryKeeper(history)),
        *extra,
    ]
    root = Supervisor.spec("root", children, strategy=Strategy.ONE_FOR_ONE,
                           intensity=ROOT_INTENSITY, backoff=RESTART_BACKOFF)
    return ServiceTree(root=root, market_names=tuple(market_name(m) for m in market_ids))
