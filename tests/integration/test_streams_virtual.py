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
