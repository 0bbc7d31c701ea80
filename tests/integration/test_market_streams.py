"""The market's streams on trio's virtual clock: stale cadence, first stats, liquidation events, finality."""

from __future__ import annotations

import json

import trio

from tests.integration.harness import ALICE, BTC, BTC_FEED, opened, running_service, service_config


async def _next(ws, wanted: str, *, limit: int = 200, within_s: float = 30) -> dict:  # type: ignore[no-untyped-def]
    """The next ``wanted`` message; fails (virtual time) rather than waiting for ever."""
    with trio.fail_after(within_s):
        for _ in range(limit):
            message = json.loads(await ws.receive())
            if message["type"] == wanted:
                return message
    raise AssertionError(f"no {wanted} within {limit} messages")


async def test_a_stale_price_keeps_its_cadence_with_its_true_age(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: ["65000"] * 500}) as service:
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/prices/{BTC}") as ws:
            await _next(ws, "price_update")
            service.feed.pause()  # the oracle goes quiet
            stale = []
            while len(stale) < 5:
                message = await _next(ws, "price_update")
                if message["stale"]:
                    stale.append((trio.current_time(), message["age_ms"]))
            gaps = [round(b[0] - a[0], 3) for a, b in zip(stale, stale[1:])]
            ages = [b[1] - a[1] for a, b in zip(stale, stale[1:])]
            assert gaps == [1.0] * 4 and ages == [1000] * 4
            assert stale[0][1] > 10_000
        response = await client.get(f"/api/v1/markets/{BTC}")
        body = await response.get_json()
        assert body["price"]["stale"] is True and body["price"]["age_ms"] >= stale[-1][1]
        await service.system.stop()


async def test_the_first_price_refreshes_the_market_stats_snapshot(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: ["65000"] * 100}) as service:
        await trio.sleep(0.5)  # the first price is in; the periodic stats are 5 s away
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/market-stats/{BTC}") as ws:
            snapshot = await _next(ws, "market_stats")
            assert snapshot["price"] == "65000" and trio.current_time() < 1.0
        await service.system.stop()


async def test_liquidation_events_arrive_in_the_tick_that_crossed(autojump_clock: trio.abc.Clock) -> None:
    path = ["65000"] * 5 + ["64300"] * 5 + ["65000"] * 50
    async with running_service(service_config(), {BTC_FEED: path}) as service:
        await service.deliver(opened(1, ALICE, is_long=True, size="1", collateral="1000", entry="65000"))
        client = service.app.test_client()
        async with client.websocket("/api/v1/ws/liquidations") as ws:
            crossed = await _next(ws, "liquidation_event")
            at = trio.current_time()
            assert crossed["kind"] == "liquidatable" and crossed["mark_price"] == "64300"
            assert abs(at - 5 * 0.4) < 1e-6, at  # the sixth price, at once, not the next 5 s alert
            assert crossed["shortfall"] == "21.5" and crossed["channel"] == "liquidations"
            recovered = await _next(ws, "liquidation_event")
            assert recovered["kind"] == "recovered" and abs(trio.current_time() - 10 * 0.4) < 1e-6
            assert recovered["id"] != crossed["id"]
        await service.system.stop()


async def test_positions_update_says_which_positions_are_settled(autojump_clock: trio.abc.Clock) -> None:
    from perpstream.chain.events import IndexedEvent

    async with running_service(service_config(), {BTC_FEED: ["65000"] * 100}) as service:
        opening = opened(1, ALICE, is_long=True, size="1", collateral="1000", entry="65000")
        await service.deliver(opening)
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/positions/{ALICE}") as ws:
            [position] = (await _next(ws, "positions_update"))["positions"]
            assert position["finality"] == "pending"
            assert position["last_event"]["tx_hash"] == opening.event.meta.tx_hash
            await service.deliver(IndexedEvent(opening.event, "final"))
            await _next(ws, "position_opened")
            [position] = (await _next(ws, "positions_update"))["positions"]
            assert position["finality"] == "final"
        response = await client.get(f"/api/v1/positions/{ALICE}")
        [position] = (await response.get_json())["positions"]
        assert position["finality"] == "final" and position["last_event"]["block_number"] > 0
        await service.system.stop()
