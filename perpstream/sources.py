"""Build the price feed and the chain source the configuration asks for.

``feed.source``: ``simulated`` (seeded GBM, the embedded default) or
``hermes`` (Pyth Hermes, with the API key from the environment).
``chain.source``: ``embedded`` (an in-process EVM with demo traders, the
default) or ``rpc`` (a real node's JSON-RPC endpoint). Either way the
indexer's state lives in a SQLite file under ``server.data_dir``. The
embedded chain starts from genesis on every run, so its index file is
started afresh too; a real chain's index is resumed from its cursor. On the
embedded chain the feed is wrapped in a :class:`~perpstream.devchain.SigningFeed`,
so every price carries an update signed for the chain's demo oracle, as
Hermes's carry Pyth's.

The data directory is locked for the sources' lifetime (see
:mod:`perpstream.data_lock`) before any file in it is touched, and the
JSON-RPC indexer's HTTP client lives as long as the sources too: an indexer
restart reuses its connections instead of leaking a client each time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal
from pathlib import Path

import attrs
import httpx

from actors import ChildSpec, Restart
from perpstream.chain.indexer import IndexerStatus
from perpstream.chain.jsonrpc import JsonRpcChainClient
from perpstream.chain.store import IndexerStore, PositionStore
from perpstream.clock import WallClock
from perpstream.config import Config
from perpstream.data_lock import hold_data_dir
from perpstream.devchain import MarketRisk, SignedPrices, SigningFeed
from perpstream.history import HISTORY_FILENAME, StreamHistory
from perpstream.feeds import HermesConfig, HermesFeed, MarketSpec, PriceFeed, SimulatedFeed
from perpstream.services.chain_actors import IndexerActor
from perpstream.services.demo_actors import (
    DemoLiquidatorActor,
    DemoTraderActor,
    DevChainActor,
    FundingKeeperActor,
    NodeHandle,
)
from perpstream.services.store import PositionSource
from perpstream.services.topics import INDEXER

__all__ = ["Sources", "build_feed", "history_path", "index_path", "open_sources", "unlink_sqlite"]

log = logging.getLogger("perpstream.sources")

# Empty blocks on the embedded chain, so confirmations advance between trades.
EMBEDDED_BLOCK_INTERVAL_S = 2.0


@attrs.frozen
class Sources:
    """Where prices and positions come from, and how to report on them."""

    feed: PriceFeed
    store: PositionSource
    chain: Sequence[ChildSpec] = ()
    indexer_status: Callable[[], IndexerStatus | None] | None = None
    describe: dict[str, str] = attrs.Factory(dict)
    #: The streams' history; None: in memory (a restart starts new epochs).
    history: StreamHistory | None = None


def build_feed(config: Config, clock: WallClock) -> PriceFeed:
    feed = config.feed
    if feed.source == "hermes":
        hermes = feed.hermes
        return HermesFeed(
            HermesConfig(
                feed_ids=[m.pyth_feed_id for m in config.markets],
                base_url=hermes.base_url,
                api_key=os.environ.get(hermes.api_key_env) or None,
                connect_timeout=hermes.connect_timeout_s,
                read_timeout=hermes.read_timeout_s,
                price_timeout=max(feed.stale_after_ms, 1) / 1000,
                backoff_initial=hermes.backoff_initial_s,
                backoff_max=hermes.backoff_max_s,
                rate_limited_wait=hermes.rate_limited_wait_s,
                requests_per_minute=hermes.requests_per_minute,
                request_burst=hermes.request_burst,
            ),
            wall_clock=clock.now,
        )
    specs = [
        MarketSpec(m.pyth_feed_id, m.simulated.start_price, m.simulated.annual_volatility)
        for m in config.markets
    ]
    return SimulatedFeed.random_walk(
        specs, seed=feed.simulated.seed, interval=feed.simulated.interval_ms / 1000, wall_clock=clock.now
    )


def index_path(config: Config) -> Path:
    """The indexer's SQLite file for ``config`` (under ``server.data_dir``)."""
    name = "embedded-chain.sqlite3" if config.chain.source == "embedded" else "chain-index.sqlite3"
    return Path(config.server.data_dir) / name


def history_path(config: Config) -> Path:
    """The chain-derived streams' history file, beside the index it is derived from."""
    name = f"embedded-{HISTORY_FILENAME}" if config.chain.source == "embedded" else HISTORY_FILENAME
    return Path(config.server.data_dir) / name


def unlink_sqlite(path: Path) -> None:
    """Remove an SQLite file with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _chain_children(
    config: Config,
    clock: WallClock,
    store: IndexerStore,
    status_slot: list[IndexerStatus],
    http: httpx.AsyncClient,
    node: NodeHandle,
    signed: SignedPrices,
) -> list[ChildSpec]:
    chain = config.chain
    markets = [m.id for m in config.markets]
    indexer_settings = {
        "store": store,
        "markets": markets,
        "confirmations": chain.confirmations,
        "start_block": chain.start_block,
        "poll_interval_s": chain.poll_interval_ms / 1000,
        "max_block_range": chain.max_block_range,
        "status": lambda status: status_slot.__setitem__(slice(None), [status]),
    }
    if chain.source == "rpc":
        url = os.environ.get(chain.rpc_url_env) or chain.rpc_url
        return [ChildSpec(INDEXER, lambda: IndexerActor(
            client=lambda: JsonRpcChainClient(url, http=http),
            address=lambda: chain.contract_address, reset_on_mismatch=False, **indexer_settings))]  # type: ignore[arg-type]
    risk = {
        m.id: MarketRisk(m.maintenance_margin_ratio, m.liquidation_fee_ratio, m.min_keeper_fee, m.max_keeper_fee)
        for m in config.markets
    }
    feeds = {m.id: m.pyth_feed_id for m in config.markets}
    demo = chain.demo
    children = [
        ChildSpec("dev-chain", lambda: DevChainActor(
            node, traders=demo.accounts, block_interval_s=EMBEDDED_BLOCK_INTERVAL_S, market_risk=risk,
            market_feeds=feeds, wall_clock=clock.now)),
        ChildSpec(INDEXER, lambda: IndexerActor(
            client=lambda: node.get().client(), address=lambda: node.get().address,
            reset_on_mismatch=True, **indexer_settings)),  # type: ignore[arg-type]
    ]
    if demo.enabled:
        max_leverage = min((m.max_leverage for m in config.markets), default=Decimal(50))
        children += [
            ChildSpec("demo-trader", lambda: DemoTraderActor(
                node, signed, markets=markets, seed=demo.seed, interval_s=demo.trade_interval_ms / 1000,
                max_leverage=max_leverage, clock=clock), restart=Restart.PERMANENT),
            ChildSpec("demo-liquidator", lambda: DemoLiquidatorActor(node, signed, clock=clock)),
            ChildSpec("funding-keeper", lambda: FundingKeeperActor(
                node, markets=markets, interval_s=demo.funding_interval_ms / 1000, clock=clock)),
        ]
    return children


@asynccontextmanager
async def open_sources(
    config: Config, clock: WallClock, *, given: Sources | None = None, local_history: bool = True
) -> AsyncIterator[Sources]:
    """The configured sources for the daemon's lifetime (``given``: use those instead).

    ``local_history``: open the chain-derived streams' history file (a core on a bus keeps its history in Redis).
    """
    if given is not None:
        yield given
        return
    path = index_path(config)
    async with AsyncExitStack() as stack:
        stack.enter_context(hold_data_dir(path.parent))
        if config.chain.source == "embedded":
            # A new chain every run: its index and history start anew (a new epoch).
            unlink_sqlite(path)
            unlink_sqlite(history_path(config))
        history = None
        if local_history:
            streams = config.streams
            history = StreamHistory.open(history_path(config), size=streams.history_size,
                                         ttl_s=streams.history_ttl_s, now_ms=clock.now_ms)
            stack.callback(history.close)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=config.chain.rpc_timeout_s))
        store = IndexerStore(path)
        stack.callback(store.close)
        positions = PositionStore(path)
        stack.callback(positions.close)
        status_slot: list[IndexerStatus] = []
        node = NodeHandle()
        feed = build_feed(config, clock)
        signing = SigningFeed(feed, node.oracle_domain) if config.chain.source == "embedded" else None
        chain_description = (
            f"embedded EVM (demo traders {'on' if config.chain.demo.enabled else 'off'})"
            if config.chain.source == "embedded"
            else f"JSON-RPC node, contract {config.chain.contract_address}"
        )
        yield Sources(
            feed=signing or feed,
            store=positions,
            chain=_chain_children(
                config, clock, store, status_slot, http, node, signing.signed if signing else SignedPrices()
            ),
            indexer_status=lambda: status_slot[0] if status_slot else None,
            describe={
                "price feed": config.feed.source,
                "chain": chain_description,
                "data directory": str(path.parent.resolve()),
            },
            history=history,
        )
