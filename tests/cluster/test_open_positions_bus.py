"""The list of every open position through a real Redis: what the core writes is what an edge pages through."""

from __future__ import annotations

import json

import pytest

from perpstream.bus import BusKeys, EdgeOpenPositions, OpenPositionsPublisher, RedisLink
from perpstream.chain.store import StoreSnapshot
from perpstream.services.open_positions import OpenPositionsUnavailable
from perpstream.services.queries import MarketQueries
from tests.services.builders import BOB, BTC, ETH, T0_MS, core, stored

from .redis_server import RedisServer

MARKETS = [BTC, ETH]


def _publisher(link: RedisLink, keys: BusKeys, now: list[int]) -> OpenPositionsPublisher:
    return OpenPositionsPublisher(link, keys, MARKETS, now_ms=lambda: now[0], interval_s=1.0, ttl_s=7.0)


async def test_an_edge_serves_every_market_the_core_published_and_refuses_a_list_with_one_missing(
    redis: RedisServer,
) -> None:
    keys, now = BusKeys("t"), [T0_MS]
    async with RedisLink(redis.url).open() as link:
        await _publish_and_page(link, keys, now)


async def _publish_and_page(link: RedisLink, keys: BusKeys, now: list[int]) -> None:
    queries = MarketQueries(lambda: now[0])
    queries.register(core(BTC, StoreSnapshot(None, [stored(1), stored(3, account=BOB)], [])))
    publisher, edge = _publisher(link, keys, now), EdgeOpenPositions(link, keys, MARKETS)

    await publisher.publish(queries)  # ETH is not running: only BTC is written
    with pytest.raises(OpenPositionsUnavailable) as refused:
        await edge()
    assert refused.value.code == "market_unavailable" and ETH in refused.value.message
    assert publisher.positions == 2

    now[0] += 500
    queries.register(core(ETH, StoreSnapshot(None, [stored(2, market_id=ETH)], [])))
    await publisher.publish(queries)
    listed = await edge()
    rows = [make() for make in listed.rows.values()]
    assert sorted(row["position_id"] for row in rows) == [f"0x{n:064x}" for n in (1, 2, 3)]
    assert {row["user_address"] for row in rows if row["position_id"].endswith("3")} == {BOB}
    assert listed.ts == T0_MS + 500
    ttl_ms = await link.client.pttl(keys.open_positions(BTC))
    assert 0 < ttl_ms <= 7000  # a core that stops publishing is not listed for long
    assert json.loads(await link.client.get(keys.open_positions(ETH)) or b"{}")["ts"] == T0_MS + 500


async def test_an_edge_without_redis_says_so(redis: RedisServer) -> None:
    async with RedisLink(redis.url).open() as link:
        redis.kill()
        with pytest.raises(OpenPositionsUnavailable) as refused:
            await EdgeOpenPositions(link, BusKeys("t"), MARKETS)()
    assert refused.value.code == "unavailable" and link.where in refused.value.message
