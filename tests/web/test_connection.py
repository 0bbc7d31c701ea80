"""Connection backpressure and client-message handling, on virtual time.

The socket is a double whose sends can be held, so a "slow reader" is
exactly as slow as the test says: the policy under test is the
connection's, not the kernel's (the real-socket variant lives in the
end-to-end tests).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import attrs
import pytest
import trio

import actors
from perpstream.clock import WallClock
from perpstream.protocol import Channel, FundingRateUpdate, PriceUpdate
from perpstream.services.topics import StreamPublisher
from perpstream.streams import StreamKey
from perpstream.web.connection import Connection, WebSocketIO
from perpstream.web.context import AppContext
from perpstream.web.metrics import Metrics
from tests.integration.harness import BTC, BTC_FEED, running_service, service_config

PRICES = StreamKey(Channel.PRICES, BTC)
STATS = StreamKey(Channel.MARKET_STATS, BTC)


@attrs.define
class FakeSocket:
    """Records what the server sends; ``hold`` makes sends block, like a full TCP window."""

    sent: list[dict] = attrs.Factory(list)
    closed: tuple[int, str] | None = None
    inbox_send: trio.MemorySendChannel[str | bytes] = None  # type: ignore[assignment]
    inbox: trio.MemoryReceiveChannel[str | bytes] = None  # type: ignore[assignment]
    released: trio.Event = attrs.Factory(trio.Event)
    holding: bool = False

    def __attrs_post_init__(self) -> None:
        self.inbox_send, self.inbox = trio.open_memory_channel(100)
        self.released.set()

    def hold(self) -> None:
        self.released = trio.Event()

    def release(self) -> None:
        self.released.set()

    async def send(self, text: str) -> None:
        await self.released.wait()
        self.sent.append(json.loads(text))

    async def receive(self) -> str | bytes:
        return await self.inbox.receive()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def io(self) -> WebSocketIO:
        return WebSocketIO(send=self.send, receive=self.receive, close=self.close)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


def _price(n: int) -> PriceUpdate:
    return PriceUpdate(price=Decimal(65000 + n), confidence=Decimal("1.5"), ema_price=Decimal(65000),
                       publish_time=1_800_000_000 + n, age_ms=0, stale=False, source="simulated")


@asynccontextmanager
async def connection(
    socket: FakeSocket, first: StreamKey | None, *, event_buffer: int = 4, limits: dict[str, object] | None = None,
    context: AppContext | None = None, **ws: object
) -> AsyncIterator[tuple[AppContext, Connection]]:
    if context is None:
        config = service_config(ws={"event_buffer": event_buffer, **ws}, limits=limits or {})
        context = AppContext(config=config, registry=actors.Registry(), clock=WallClock(), metrics=Metrics())
    conn = Connection(socket.io(), context, endpoint="test", multiplexed=first is None, client="198.51.100.7")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve, first)
        await trio.sleep(0.01)
        yield context, conn
        nursery.cancel_scope.cancel()


async def test_a_slow_reader_gets_the_newest_snapshot_with_a_conflated_count(autojump_clock: trio.abc.Clock) -> None:
    socket = FakeSocket()
    async with connection(socket, PRICES) as (context, _):
        topics = StreamPublisher.of(context.registry, PRICES, 4, context.history)
        topics.publish_snapshot(_price(0), 1)
        await trio.sleep(0.01)
        socket.hold()
        for n in range(1, 51):
            topics.publish_snapshot(_price(n), n + 1)
            await trio.sleep(0.01)
        socket.release()
        await trio.sleep(0.1)
    prices = [m for m in socket.sent if m["type"] == "price_update"]
    assert [m["price"] for m in prices] == ["65000", "65001", "65050"]
    assert prices[-1]["conflated"] == 48  # 2..49 never went out
    assert [m["seq"] for m in socket.sent] == list(range(1, len(socket.sent) + 1))
    assert context.metrics.conflated._value.get() == 48


async def test_event_overflow_closes_only_that_connection_with_1013(autojump_clock: trio.abc.Clock) -> None:
    slow, fast = FakeSocket(), FakeSocket()
    async with connection(slow, STATS, event_buffer=4) as (context, _):
        fast_conn = Connection(fast.io(), context, endpoint="test", multiplexed=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fast_conn.serve, STATS)
            await trio.sleep(0.01)
            slow.hold()
            topics = StreamPublisher.of(context.registry, STATS, 4, context.history)
            update = FundingRateUpdate(funding_rate=Decimal("0.0001"), previous_funding_rate=Decimal(0),
                                       funding_index=Decimal(1), source="model")
            # One send is in flight (held); the queue holds 4 more; the 6th overflows.
            for n in range(7):
                topics.publish_event(update, n)
                await trio.sleep(0.01)
            slow.release()
            await trio.sleep(0.1)
            assert slow.closed == (1013, "slow_consumer")
            assert slow.sent[-1] == {**slow.sent[-1], "type": "goodbye", "reason": "slow_consumer"}
            assert fast.closed is None
            assert fast.types().count("funding_rate_update") == 7
            nursery.cancel_scope.cancel()
    assert context.metrics.slow_consumer_closes._value.get() == 1


async def test_malformed_input_gets_errors_then_1008(autojump_clock: trio.abc.Clock) -> None:
    socket = FakeSocket()
    async with connection(socket, PRICES):
        await socket.inbox_send.send("{not json")
        await socket.inbox_send.send(b"\x00\x01")
        await socket.inbox_send.send('{"op":"dance"}')  # unknown op: answered, not counted
        await socket.inbox_send.send("x" * 70_000)
        await trio.sleep(0.1)
    errors = [m for m in socket.sent if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["malformed_json", "binary_frame", "unknown_op", "frame_too_large"]
    assert socket.types()[-1] == "goodbye"
    assert socket.closed == (1008, "repeated_malformed_input")


async def test_ping_gets_pong_on_the_stream_seq(autojump_clock: trio.abc.Clock) -> None:
    socket = FakeSocket()
    async with connection(socket, PRICES):
        await socket.inbox_send.send('{"op":"ping","id":42}')
        await trio.sleep(0.1)
    assert socket.sent[-1]["type"] == "pong" and socket.sent[-1]["id"] == 42
    assert [m["seq"] for m in socket.sent] == list(range(1, len(socket.sent) + 1))
    assert socket.closed is None


async def test_multiplexed_subscribe_and_unsubscribe_with_acks(autojump_clock: trio.abc.Clock) -> None:
    socket = FakeSocket()
    async with connection(socket, None) as (context, conn):
        StreamPublisher.of(context.registry, PRICES, 4, context.history).publish_snapshot(_price(1), 1)
        await socket.inbox_send.send(json.dumps({"op": "subscribe", "channel": "prices", "market_id": "BTC-USDC-PERP", "id": 7}))
        await socket.inbox_send.send(json.dumps({"op": "subscribe", "channel": "market_stats", "market_id": BTC, "id": "b"}))
        await socket.inbox_send.send(json.dumps({"op": "subscribe", "channel": "prices", "market_id": "doge", "id": 9}))
        await trio.sleep(0.1)
        assert set(conn.streams) == {"prices:btc-usdc-perp", "market_stats:btc-usdc-perp"}
        await socket.inbox_send.send(json.dumps({"op": "unsubscribe", "channel": "prices", "market_id": BTC, "id": 8}))
        await trio.sleep(0.1)
        assert set(conn.streams) == {"market_stats:btc-usdc-perp"}
        assert context.registry.topic(PRICES.topic).subscriber_count == 0
    acks = [(m["type"], m["id"]) for m in socket.sent if m["type"] in ("subscribed", "unsubscribed", "error")]
    assert acks == [("subscribed", 7), ("subscribed", "b"), ("error", 9), ("unsubscribed", 8)]
    prices = [m for m in socket.sent if m.get("channel") == "prices"]
    assert [(m["type"], m["seq"]) for m in prices] == [("connected", 1), ("price_update", 2)]
    assert socket.closed is None


async def test_too_many_subscriptions_closes_with_4429(autojump_clock: trio.abc.Clock) -> None:
    socket = FakeSocket()
    async with connection(socket, None, max_subscriptions_per_connection=1):
        await socket.inbox_send.send(json.dumps({"op": "subscribe", "channel": "prices", "market_id": BTC}))
        await socket.inbox_send.send(json.dumps({"op": "subscribe", "channel": "market_stats", "market_id": BTC}))
        await trio.sleep(0.1)
    assert socket.closed == (4429, "too_many_subscriptions")
    assert "too_many_subscriptions" in [m.get("code") for m in socket.sent]


@pytest.mark.parametrize("frame", ['{"op":"subscribe","channel":"prices","market_id":"btc-usdc-perp"}'])
async def test_subscribe_is_refused_on_single_stream_paths(autojump_clock: trio.abc.Clock, frame: str) -> None:
    socket = FakeSocket()
    async with connection(socket, PRICES):
        await socket.inbox_send.send(frame)
        await trio.sleep(0.1)
    assert socket.sent[-1]["code"] == "unsupported_op"
    assert socket.closed is None


def _subscribe(channel: str, request_id: int, **params: str) -> str:
    return json.dumps({"op": "subscribe", "channel": channel, "id": request_id, **params})


async def test_a_subscribe_flood_gets_rate_limited_with_retry_after_then_4429(
    autojump_clock: trio.abc.Clock,
) -> None:
    socket = FakeSocket()
    async with connection(socket, None, limits={"subscribe_rate_per_s": 2.0, "subscribe_burst": 3}) as (context, _):
        await socket.inbox_send.send(_subscribe("prices", 1, market_id=BTC))  # the burst: three at once
        await socket.inbox_send.send(_subscribe("market_stats", 2, market_id=BTC))
        await socket.inbox_send.send(_subscribe("liquidations", 3))
        for i in range(4):  # then one token per half second
            await trio.sleep(0.5)
            op = "unsubscribe" if i % 2 == 0 else "subscribe"
            await socket.inbox_send.send(json.dumps({"op": op, "channel": "liquidations", "id": 4 + i}))
        await trio.sleep(0.1)
        assert socket.closed is None
        assert [m["type"] for m in socket.sent if m.get("id") in range(1, 8)].count("error") == 0
        for i in range(5):
            await socket.inbox_send.send(_subscribe("prices", 10 + i, market_id=BTC))
        await trio.sleep(0.1)
    error = next(m for m in socket.sent if m.get("code") == "rate_limited")
    assert error["type"] == "error" and error["id"] == 10 and error["retry_after_s"] == 15.0
    assert "at most 3 subscribe/unsubscribe requests at once, then 2 per second" in error["message"]
    assert socket.types()[-1] == "goodbye" and socket.sent[-1]["reason"] == "rate_limited"
    assert socket.closed == (4429, "rate_limited")
    assert 'perpstream_ws_limit_refusals_total{code="rate_limited"} 1.0' in context.metrics.render().decode()


async def test_pings_do_not_draw_on_the_subscribe_rate(autojump_clock: trio.abc.Clock) -> None:
    socket = FakeSocket()
    async with connection(socket, None, limits={"subscribe_rate_per_s": 1.0, "subscribe_burst": 1}):
        for i in range(20):
            await socket.inbox_send.send(json.dumps({"op": "ping", "id": i}))
        await trio.sleep(0.1)
    assert socket.types().count("pong") == 20 and socket.closed is None


async def test_distinct_accounts_are_limited_across_an_address_s_connections(autojump_clock: trio.abc.Clock) -> None:
    first, second = FakeSocket(), FakeSocket()
    accounts = ["0x" + f"{n:040x}" for n in range(1, 4)]
    config = service_config(limits={"max_accounts_per_client": 2})
    async with running_service(config, {BTC_FEED: ["65000"] * 50}) as service:
        async with connection(first, None, context=service.context) as (_, conn):
            for n, account in enumerate(accounts[:2]):
                await first.inbox_send.send(_subscribe("positions", n, user_address=account))
            await trio.sleep(0.5)
            async with connection(second, None, context=service.context):
                await second.inbox_send.send(_subscribe("positions", 5, user_address=accounts[0]))  # watched already
                await second.inbox_send.send(_subscribe("positions", 6, user_address=accounts[2]))
                await trio.sleep(0.5)
            assert len(conn.streams) == 2 and first.closed is None
    assert [m["type"] for m in second.sent if m.get("id") == 5] == ["subscribed"]
    refused = next(m for m in second.sent if m.get("id") == 6)
    assert refused["code"] == "too_many_accounts" and refused["retry_after_s"] == 15.0
    assert second.closed == (4429, "too_many_accounts")


async def test_subscriptions_are_limited_across_an_address_s_connections(autojump_clock: trio.abc.Clock) -> None:
    first, second = FakeSocket(), FakeSocket()
    config = service_config(limits={"max_subscriptions_per_client": 2})
    context = AppContext(config=config, registry=actors.Registry(), clock=WallClock(), metrics=Metrics())
    async with connection(first, None, context=context) as (_, conn):
        await first.inbox_send.send(_subscribe("prices", 1, market_id=BTC))
        await first.inbox_send.send(_subscribe("market_stats", 2, market_id=BTC))
        await trio.sleep(0.1)
        async with connection(second, None, context=context):
            await second.inbox_send.send(_subscribe("liquidations", 3))
            await trio.sleep(0.1)
        assert len(conn.streams) == 2 and first.closed is None
    refused = next(m for m in second.sent if m.get("id") == 3)
    assert refused["code"] == "too_many_subscriptions" and refused["retry_after_s"] == 15.0
    assert "at most 2 subscriptions per client across its connections" in refused["message"]
    assert second.closed == (4429, "too_many_subscriptions")


async def test_an_address_s_subscriptions_are_released_when_its_connections_leave(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = service_config(limits={"max_subscriptions_per_client": 2})
    context = AppContext(config=config, registry=actors.Registry(), clock=WallClock(), metrics=Metrics())
    for round_ in range(3):
        socket = FakeSocket()
        async with connection(socket, None, context=context):
            await socket.inbox_send.send(_subscribe("prices", 1, market_id=BTC))
            await socket.inbox_send.send(_subscribe("market_stats", 2, market_id=BTC))
            await trio.sleep(0.1)
        assert [m["type"] for m in socket.sent if m.get("id") in (1, 2)] == ["subscribed"] * 2, round_
    assert len(context.limits) == 0


async def test_closes_bytes_and_subscriptions_are_counted_without_addresses(autojump_clock: trio.abc.Clock) -> None:
    socket = FakeSocket()
    async with connection(socket, PRICES) as (context, conn):
        StreamPublisher.of(context.registry, PRICES, 4, context.history).publish_snapshot(_price(1), 1)
        await trio.sleep(0.1)
        conn.close(1000, None)
        await trio.sleep(0.1)
    text = context.metrics.render().decode()
    assert 'perpstream_ws_closes_total{code="1000"} 1.0' in text
    assert 'perpstream_ws_messages_sent_total{channel="prices"}' in text
    sent = float(next(line for line in text.splitlines()
                      if line.startswith('perpstream_ws_bytes_sent_total{channel="prices"}')).split()[-1])
    assert sent > 50
    assert "perpstream_ws_publish_to_socket_seconds_bucket" in text
    assert "198.51.100.7" not in text


async def test_requests_after_a_refusal_earn_no_more_answers_or_strikes(autojump_clock: trio.abc.Clock) -> None:
    socket = FakeSocket()
    async with connection(socket, None, max_subscriptions_per_connection=1,
                          limits={"strikes_before_cooldown": 3}) as (context, _):
        await socket.inbox_send.send(_subscribe("prices", 1, market_id=BTC))
        for i in range(20):
            await socket.inbox_send.send(_subscribe("market_stats", 2 + i, market_id=BTC))
        await trio.sleep(0.1)
        assert context.limits.cooling_down("198.51.100.7", context.clock.now()) == 0.0
    assert [m.get("code") for m in socket.sent if m["type"] == "error"] == ["too_many_subscriptions"]
    assert socket.closed == (4429, "too_many_subscriptions")


async def test_a_peer_that_resets_under_a_write_ends_the_connection_quietly(autojump_clock: trio.abc.Clock) -> None:
    # A reset seen by the connection's own write (not the guard's cut) is the
    # client leaving: serve() returns, nothing escapes to the framework's
    # error handler (which logged "Exception on websocket" at ERROR).
    socket = FakeSocket()

    async def reset(text: str) -> None:
        raise trio.BrokenResourceError("socket connection broken: [Errno 104] Connection reset by peer")

    config = service_config(ws={"event_buffer": 4}, limits={})
    context = AppContext(config=config, registry=actors.Registry(), clock=WallClock(), metrics=Metrics())
    io = WebSocketIO(send=reset, receive=socket.receive, close=socket.close)
    conn = Connection(io, context, endpoint="test", multiplexed=False, client="198.51.100.7")
    StreamPublisher.of(context.registry, PRICES, 4, context.history).publish_snapshot(_price(0), 1)
    with trio.fail_after(5):
        await conn.serve(PRICES)
    assert conn.closed and conn not in context.connections
