"""The query interface on the running tree: typed reads, unavailability, typed liquidation events."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

from perpstream.protocol import LiquidationEvent
from perpstream.services.queries import MarketQueries, MarketUnavailable
from tests.integration.harness import ALICE, BTC, BTC_FEED, opened, running_service, service_config

ALICE_CHECKSUM = __import__("eth_utils").to_checksum_address(ALICE)


async def test_typed_reads_without_messages(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: ["65000"] * 100}) as service:
        await service.deliver(opened(1, ALICE, is_long=True, size="1", collateral="1000", entry="65000"))
        await trio.sleep(0.5)
        queries = MarketQueries.of(service.system.registry, service.clock.now_ms)
        assert queries.price(BTC) == Decimal(65000)
        [view] = queries.positions_of(ALICE_CHECKSUM, BTC)
        assert view.collateral == Decimal(1000) and view.liquidatable is False
        assert queries.candidates(BTC, 5).candidates[0].position_id == view.position_id
        assert queries.stats(BTC).open_positions == 1
        await service.system.stop()


async def test_a_failed_market_is_unavailable_until_its_next_incarnation(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: ["65000"] * 100}) as service:
        await trio.sleep(0.5)
        queries = MarketQueries.of(service.system.registry, service.clock.now_ms)
        before = queries.stats(BTC)
        service.system.registry.fail_actor(f"markets/{BTC}", "rehearsal")
        await trio.sleep(0)
        await trio.sleep(0)
        with pytest.raises(MarketUnavailable):
            queries.stats(BTC)
        # REST waits the moment a restart takes rather than refuse.
        response = await service.app.test_client().get(f"/api/v1/positions/{ALICE}")
        assert response.status_code == 200 and queries.available(BTC)
        assert queries.stats(BTC).open_positions == before.open_positions
        await service.system.stop()


async def test_bots_get_liquidation_events_as_typed_values(autojump_clock: trio.abc.Clock) -> None:
    path = ["65000"] * 5 + ["64300"] * 50
    async with running_service(service_config(), {BTC_FEED: path}) as service:
        queries = MarketQueries.of(service.system.registry, service.clock.now_ms)
        with queries.liquidation_events.subscribe() as events:
            await service.deliver(opened(1, ALICE, is_long=True, size="1", collateral="1000", entry="65000"))
            with trio.fail_after(30):
                delivery = await events.receive()
        event = delivery.item
        assert isinstance(event, LiquidationEvent)
        assert (event.kind, event.mark_price, event.shortfall) == ("liquidatable", Decimal(64300), Decimal("21.5"))
        assert queries.is_liquidatable(BTC, event.position_id)
        await service.system.stop()


async def test_rest_answers_503_when_a_market_stays_down(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(service_config(), {BTC_FEED: ["65000"] * 100}) as service:
        await trio.sleep(0.5)
        queries = MarketQueries.of(service.system.registry, service.clock.now_ms)
        await service.system.registry.lookup_supervisor("markets").stop_child(f"markets/{BTC}")
        assert not queries.available(BTC)
        started = trio.current_time()
        response = await service.app.test_client().get("/api/v1/positions")
        assert response.status_code == 503 and trio.current_time() - started >= 2.0
        await service.system.stop()
