"""The service end to end on trio's virtual clock, through the quart-trio test client."""

from __future__ import annotations

import json

import trio

from tests.integration.harness import ALICE, BTC, BTC_FEED, opened, running_service, service_config


async def _messages(ws, count: int) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(await ws.receive()) for _ in range(count)]


async def test_price_stream_connected_snapshot_then_one_per_second(autojump_clock: trio.abc.Clock) -> None:
    prices = [str(65000 + i) for i in range(100)]
    async with running_service(service_config(), {BTC_FEED: prices}) as service:
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/prices/{BTC.upper()}") as ws:
            connected, snapshot = await _messages(ws, 2)
            assert connected["type"] == "connected" and connected["seq"] == 1
            assert connected["market_id"] == BTC and connected["interval_ms"] == 1000
            assert snapshot["type"] == "price_update" and snapshot["seq"] == 2
            assert isinstance(snapshot["price"], str)
            times = []
            for expected_seq in range(3, 8):
                message = json.loads(await ws.receive())
                assert message["seq"] == expected_seq
                times.append(trio.current_time())
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert all(abs(gap - 1.0) < 0.05 for gap in gaps), gaps
        await service.system.stop()


async def _receive_until(ws, wanted: str, *, limit: int = 200) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(limit):
        message = json.loads(await ws.receive())
        if message["type"] == wanted:
            return message
    raise AssertionError(f"no {wanted} within {limit} messages")


# A long of 1 BTC with 1,000 USDC collateral at 65,000 (mmr 0.005), as the contract sees it at P:
# health < 1.2 below P ≈ 64,386.3, < 1.05 below ≈ 64,338.8, < 1.0 below ≈ 64,321.6.
# The path warns, jumps past critical to liquidatable, recovers far above the re-arm margin at
# 65,000 and is liquidatable again: a new episode.
WARNING_PATH = ["65000"] * 10 + ["64800", "64500", "64390", "64380", "64370", "64340", "64345",
                                  "64300", "64290", "65000", "65000", "64300", "64300"]


async def test_liquidation_warnings_once_per_crossing(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: WARNING_PATH}) as service:
        await service.deliver(opened(1, ALICE, is_long=True, size="1", collateral="1000", entry="65000"))
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/positions/{ALICE}") as ws:
            connected, snapshot = await _messages(ws, 2)
            assert connected["type"] == "connected" and connected["user_address"] == ALICE_CHECKSUM
            assert snapshot["type"] == "positions_update"
            [position] = snapshot["positions"]
            assert position["side"] == "long" and position["size"] == "1"
            assert position["collateral"] == "1000" and position["entry_price"] == "65000"
            warnings = []
            seqs = [snapshot["seq"]]
            with trio.move_on_after(len(WARNING_PATH) * 0.4 + 3):
                while True:
                    message = json.loads(await ws.receive())
                    seqs.append(message["seq"])
                    if message["type"] == "liquidation_warning":
                        warnings.append(message["severity"])
            assert warnings == ["warning", "liquidatable", "liquidatable"]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must have no gaps"
        await service.system.stop()


async def test_no_warning_on_a_stale_price(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: WARNING_PATH}, feed_lag_s=60) as service:
        await service.deliver(opened(1, ALICE, is_long=True, size="1", collateral="1000", entry="65000"))
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/positions/{ALICE}") as ws:
            types = []
            with trio.move_on_after(len(WARNING_PATH) * 0.4 + 3):
                while True:
                    types.append(json.loads(await ws.receive())["type"])
            assert "liquidation_warning" not in types
            assert types.count("positions_update") >= 5
        async with client.websocket("/api/v1/ws/liquidations") as ws:
            connected, alert = await _messages(ws, 2)
            assert alert["type"] == "liquidation_alert"
            assert alert["total_liquidatable"] == 0
            assert all(not c["liquidatable"] for c in alert["candidates"])
        await service.system.stop()


ALICE_CHECKSUM = __import__("eth_utils").to_checksum_address(ALICE)


async def _arrival_gaps(ws, wanted: str, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    while len(times) < count:
        message = json.loads(await ws.receive())
        if message["type"] == wanted:
            times.append(trio.current_time())
    return [round(b - a, 3) for a, b in zip(times, times[1:])]


async def test_cadences_positions_2s_market_stats_5s_liquidations_5s(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: ["65000"] * 200}) as service:
        await service.deliver(opened(1, ALICE, is_long=True, size="1", collateral="1000", entry="65000"))
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/positions/{ALICE}") as ws:
            assert await _arrival_gaps(ws, "positions_update", 4) == [2.0, 2.0, 2.0]
        async with client.websocket(f"/api/v1/ws/market-stats/{BTC}") as ws:
            connected, snapshot = await _messages(ws, 2)
            assert snapshot["type"] == "market_stats" and snapshot["open_positions"] == 1
            assert snapshot["long_open_interest"] == "1" and snapshot["short_open_interest"] == "0"
            assert await _arrival_gaps(ws, "market_stats", 3) == [5.0, 5.0]
        async with client.websocket("/api/v1/ws/liquidations") as ws:
            connected, alert = await _messages(ws, 2)
            assert alert["type"] == "liquidation_alert"
            [candidate] = alert["candidates"]
            assert candidate["user_address"] == ALICE_CHECKSUM and candidate["liquidatable"] is False
            assert await _arrival_gaps(ws, "liquidation_alert", 3) == [5.0, 5.0]
        await service.system.stop()


async def test_session_is_shared_and_stops_after_the_grace_period(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: ["65000"] * 200}) as service:
        registry = service.system.registry
        name = f"sessions/{ALICE_CHECKSUM}"
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/positions/{ALICE}") as first:
            await _messages(first, 2)
            async with client.websocket(f"/api/v1/ws/positions/{ALICE.upper().replace('0X', '0x')}") as second:
                await _messages(second, 2)
                assert registry.lookup_supervisor("sessions").child_names() == [name]
        await trio.sleep(2.5)  # grace is 3 s
        assert name in registry.lookup_supervisor("sessions").child_names()
        async with client.websocket(f"/api/v1/ws/positions/{ALICE}") as again:  # back within the grace
            await _messages(again, 2)
        await trio.sleep(2.9)
        assert name in registry.lookup_supervisor("sessions").child_names()
        await trio.sleep(0.5)
        assert registry.lookup_supervisor("sessions").child_names() == []
        assert not [t.name for t in registry.topics() if t.name.startswith("positions/")]
        await service.system.stop()


async def test_market_restart_sends_resync_then_a_fresh_snapshot(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: [str(65000 + i) for i in range(200)]}) as service:
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/prices/{BTC}") as ws:
            await _messages(ws, 2)
            service.system.registry.fail_actor(f"markets/{BTC}", "rehearsal")
            resync = await _receive_until(ws, "resync")
            after = json.loads(await ws.receive())
            assert after["type"] == "price_update" and after["seq"] == resync["seq"] + 1
        tree = service.system.registry.snapshot()
        markets = next(c for c in tree["root"]["children"] if c["name"] == "markets")
        [btc] = markets["children"]
        assert btc["restarts"] == 1 and btc["last_failure"]["message"] == "rehearsal"
        await service.system.stop()


async def test_position_events_reach_the_account_with_side_and_size(autojump_clock: trio.abc.Clock) -> None:
    from decimal import Decimal

    from perpstream.chain.events import EventMeta, IndexedEvent, PositionClosed

    async with running_service(service_config(), {BTC_FEED: ["65000"] * 200}) as service:
        client = service.app.test_client()
        async with client.websocket(f"/api/v1/ws/positions/{ALICE}") as ws:
            await _messages(ws, 2)
            opening = opened(7, ALICE, is_long=False, size="0.5", collateral="2000", entry="65000")
            await service.deliver(opening)
            event = await _receive_until(ws, "position_opened")
            assert (event["side"], event["size"], event["finality"]) == ("short", "0.5", "pending")
            meta = EventMeta(opening.event.meta.block_number + 1, "0x" + "ee" * 32, "0x" + "dd" * 32, 0)
            close = PositionClosed(meta, opening.event.position_id, ALICE_CHECKSUM, BTC,
                                   Decimal("64000"), Decimal("500"))
            await service.deliver(IndexedEvent(close, "pending"))
            closed = await _receive_until(ws, "position_closed")
            assert (closed["side"], closed["size"], closed["price"]) == ("short", "0.5", "64000")
            assert closed["event"]["tx_hash"] == "0x" + "dd" * 32
            update = await _receive_until(ws, "positions_update")
            assert update["positions"] == []
        await service.system.stop()
