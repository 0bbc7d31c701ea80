"""The two roles of a deployment past one process: a core and its edges, over Redis.

``perpstream serve --role core``: the actor tree (feeds, chain, markets,
scanner, sessions), publishing every stream into Redis; no WebSocket
clients, only health, metrics and debug on its port. Several cores may run:
one holds the lease and is active, the others stand by (ready for nothing
but taking over). ``--role edge``: the WebSocket, REST and health frontend
of today, fed from Redis; no feed, no chain. See docs/deployment.md.
"""

from __future__ import annotations

import logging
import os
from contextlib import AsyncExitStack

import trio

import actors
from actors import ChildSpec, Supervisor
from perpstream.bus import (
    INTEREST,
    BusKeys,
    CoreLease,
    EdgeOpenPositions,
    EdgeStreams,
    InterestWatcher,
    LeaseLost,
    OpenPositionsPublisher,
    RedisLink,
    RedisRelay,
    StreamUnavailable,
    TaskActor,
)
from perpstream.clock import WallClock
from perpstream.config import Config
from perpstream.daemon import new_guard, serve_app, web_context
from perpstream.history import StreamHistory
from perpstream.protocol import Channel
from perpstream.services.tree import RESTART_BACKOFF, build_tree
from perpstream.sources import open_sources
from perpstream.streams import StreamKey
from perpstream.web.context import AppContext
from perpstream.web.health import install_health
from perpstream.workers import WORKER_ENV

__all__ = ["bus_url", "run_core", "run_edge"]

log = logging.getLogger("perpstream.cluster")


def bus_url(config: Config) -> str:
    return os.environ.get(config.bus.url_env) or config.bus.url


def _bus_check(context: AppContext, link: RedisLink) -> None:
    async def check() -> list[str]:
        if link.up:
            return []
        return [f"Redis at {link.where} is unreachable ({link.last_error}); clients stay connected and "
                "resume from its history when it is back"]

    context.readiness_checks.append(check)


async def run_core(
    config: Config,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A core: stand by until it holds the lease, then run the tree and publish to Redis until ``shutdown``."""
    clock = WallClock()
    keys = BusKeys(config.bus.prefix)
    link = RedisLink(bus_url(config))
    lease = CoreLease(link, keys, ttl_s=config.bus.lease_ttl_s)
    registry = actors.Registry()
    guard = new_guard(config)
    context = web_context(config, registry, clock, guard)
    _bus_check(context, link)

    async def standing_by() -> list[str]:
        return [] if lease.active else [f"core {lease.core_id} is standing by: another core holds the lease"]

    context.readiness_checks.append(standing_by)

    async def deployment() -> dict[str, object]:
        return {"role": "core", "core_id": lease.core_id, "active": lease.active, "redis": link.where,
                "redis_up": link.up}

    context.describe_deployment = deployment
    async with link.open(), trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: serve_app(
            config, context, guard, shutdown=shutdown, streams=False, task_status=task_status,
            describe={"role": f"core {lease.core_id} on the bus at {link.where}"}))
        task_status.started(bound)
        with trio.CancelScope() as standby:
            nursery.start_soon(_cancel_on, shutdown, standby)
            await lease.acquire()
        if not shutdown.is_set():
            try:
                await _run_active_core(config, clock, link, keys, lease, registry, context, shutdown)
            except* LeaseLost as lost:
                reason: BaseException = lost
                while isinstance(reason, BaseExceptionGroup):
                    reason = reason.exceptions[0]
                log.error("%s; exiting so that a supervisor starts this core again as a standby", reason)
                raise SystemExit(3) from None
            finally:
                with trio.CancelScope(shield=True):
                    await lease.release()


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _run_active_core(config: Config, clock: WallClock, link: RedisLink, keys: BusKeys, lease: CoreLease,
                           registry: actors.Registry, context: AppContext, shutdown: trio.Event) -> None:
    streams = config.streams
    # The list of every open position is refreshed as often as an account's positions_update.
    interval_s = streams.positions_interval_ms / 1000
    relay = RedisRelay(link, keys, max_backlog=config.bus.max_backlog)
    history_log = await relay.load(size=streams.history_size, ttl_ms=int(streams.history_ttl_s * 1000),
                                   now_ms=clock.now_ms())
    history = StreamHistory.on_bus(history_log, relay, now_ms=clock.now_ms,
                                   chain_published=relay.loaded_chain_published)
    bus = Supervisor.spec("bus", [
        ChildSpec("bus-relay", lambda: TaskActor(relay.run, lambda: {
            "written": relay.written, "backlog": relay.backlog, "lost": relay.lost, "redis_up": link.up,
            "epoch": history_log.epoch, "offset": history_log.head})),
        ChildSpec(INTEREST, lambda: InterestWatcher(link, keys)),
        ChildSpec("open-positions", lambda: OpenPositionsPublisher(
            link, keys, context.market_ids, now_ms=clock.now_ms, interval_s=interval_s,
            ttl_s=2 * interval_s + config.bus.lease_ttl_s)),
    ], backoff=RESTART_BACKOFF)
    async with open_sources(config, clock, local_history=False) as built:
        tree = build_tree(config, clock=clock, feed=built.feed, store=built.store, chain=built.chain,
                          history=history, extra=[bus])
        install_health(context, feed_status=built.feed.status, indexer_status=built.indexer_status)
        async with actors.open_system(tree.root, registry=registry):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lease.hold)
                log.info("core %s active: publishing to the bus at %s (epoch %s)", lease.core_id, link.where,
                         history_log.epoch)
                await shutdown.wait()
                nursery.cancel_scope.cancel()
            log.info("stopping actors")


async def run_edge(
    config: Config,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """An edge: serve clients from the bus until ``shutdown``.

    One of ``--workers N`` (:mod:`perpstream.workers` sets ``PERPSTREAM_WORKER``):
    it shares the port with its siblings.
    """
    clock = WallClock()
    keys = BusKeys(config.bus.prefix)
    link = RedisLink(bus_url(config))
    lease = CoreLease(link, keys, ttl_s=config.bus.lease_ttl_s)
    registry = actors.Registry()
    streams = EdgeStreams(link, keys, registry, event_buffer=config.ws.event_buffer,
                          interest_ttl_s=config.bus.interest_ttl_s)
    guard = new_guard(config)
    context = web_context(config, registry, clock, guard, history=streams, follow=streams.follow,
                          open_positions=EdgeOpenPositions(link, keys, [m.id for m in config.markets]))
    _bus_check(context, link)

    async def core_present() -> list[str]:
        holder = await lease.holder()
        return [] if holder is not None else ["no active core holds the lease: streams are paused"]

    context.readiness_checks.append(core_present)

    async def deployment() -> dict[str, object]:
        return {"role": "edge", "pid": os.getpid(), "redis": link.where, "redis_up": link.up,
                "active_core": await lease.holder(),
                "followed_streams": streams.followed, "frames": streams.frames}

    context.describe_deployment = deployment
    root = Supervisor.spec("root", [
        ChildSpec("bus-reader", lambda: TaskActor(streams.run, lambda: {
            "followed": streams.followed, "frames": streams.frames, "redis_up": link.up})),
    ], backoff=RESTART_BACKOFF)
    async with link.open(), actors.open_system(root, registry=registry), trio.open_nursery() as nursery:
        nursery.start_soon(_follow_market_streams, config, streams)
        worker = os.environ.get(WORKER_ENV)
        await serve_app(config, context, guard, shutdown=shutdown, task_status=task_status,
                        reuse_port=worker is not None,
                        describe={"role": f"edge{'' if worker is None else ' worker ' + worker} on the bus at "
                                          f"{link.where}"})
        nursery.cancel_scope.cancel()


async def _follow_market_streams(config: Config, streams: EdgeStreams) -> None:
    """Every market's prices and stats, and the liquidations stream, for the edge's REST answers."""
    keys = [StreamKey(Channel.LIQUIDATIONS)] + [
        StreamKey(channel, m.id) for m in config.markets for channel in (Channel.PRICES, Channel.MARKET_STATS)]
    async with AsyncExitStack() as held:
        for key in keys:
            while True:
                try:
                    await held.enter_async_context(streams.follow(key))
                    break
                except StreamUnavailable:
                    await streams.link.retry_pause()
        await trio.sleep_forever()
