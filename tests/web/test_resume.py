"""Resuming a stream, on virtual time: the hand-off from history to live.

A client that resumes is subscribed live *before* the history is read, and
the writer sends a stream's frames in offset order and never one at or
below the last it sent; these tests pin that down where it can go wrong:
events published while the history answer is on its way, history trimmed
before or after it is read, another epoch, an offset ahead of the server,
and frames of one stream pending on its two subscriptions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import actors
import pytest
import trio

from perpstream.clock import WallClock
from perpstream.history import Recovery, StreamHistory
from perpstream.services.topics import StreamPublisher
from perpstream.streams import Since, StreamKey
from perpstream.web.connection import Connection
from perpstream.web.context import AppContext
from perpstream.web.metrics import Metrics
from tests.history.test_log import funding, stats
from tests.integration.harness import BTC, service_config
from tests.web.test_connection import STATS, FakeSocket


class SlowHistory(StreamHistory):
    """A history whose answer takes ``delay_s`` to arrive (as across a network), read before or after the wait."""

    delay_s = 1.0
    read_first = True

    async def recover(self, key: StreamKey, since: Since) -> Recovery:
        if self.read_first:
            answer = await super().recover(key, since)
            await trio.sleep(self.delay_s)
            return answer
        await trio.sleep(self.delay_s)
        return await super().recover(key, since)


def make_context(*, size: int = 100, ttl_s: float = 300, slow: bool = False) -> AppContext:
    config = service_config(ws={"event_buffer": 64}, limits={})
    clock = WallClock()
    kind = SlowHistory if slow else StreamHistory
    history = kind.in_memory(size=size, ttl_s=ttl_s, now_ms=clock.now_ms)
    return AppContext(config=config, registry=actors.Registry(), clock=clock, metrics=Metrics(), history=history)


@asynccontextmanager
async def client(context: AppContext, since: Since | None = None) -> AsyncIterator[FakeSocket]:
    socket = FakeSocket()
    conn = Connection(socket.io(), context, endpoint="test", multiplexed=False, client="198.51.100.7")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve, STATS, since)
        await trio.sleep(0.01)
        while since is None and not socket.sent:  # started (a slow history delays it: virtual time)
            await trio.sleep(0.01)
        yield socket  # a resuming one: its history answer may still be on its way
        nursery.cancel_scope.cancel()


def publisher(context: AppContext) -> StreamPublisher:
    assert isinstance(context.history, StreamHistory)
    return StreamPublisher.of(context.registry, STATS, 64, context.history)


def stream_frames(socket: FakeSocket) -> list[dict[str, Any]]:
    return [m for m in socket.sent if "offset" in m]


def events(socket: FakeSocket) -> list[int]:
    return [m["offset"] for m in socket.sent if m["type"] == "funding_rate_update"]


def last_position(socket: FakeSocket) -> Since:
    last = stream_frames(socket)[-1]
    return Since(last["epoch"], last["offset"])


async def run_with_a_stayer(context: AppContext, during: Callable[[StreamPublisher], None] | None = None,
                            *, before: int = 3, away: int = 4) -> tuple[FakeSocket, FakeSocket]:
    """A control client stays while another leaves after ``before`` events and resumes after ``away`` more."""
    topics = publisher(context)
    topics.publish_snapshot(stats(), 0)
    async with client(context) as stayer:
        async with client(context) as leaver:
            for n in range(before):
                topics.publish_event(funding(n), n)
                await trio.sleep(0.01)
        for n in range(away):
            topics.publish_event(funding(100 + n), n)
        topics.publish_snapshot(stats(), 0)
        async with client(context, last_position(leaver)) as resumed:
            if during is not None:
                during(topics)
            await trio.sleep(2)
            topics.publish_event(funding(999), 0)
            await trio.sleep(0.01)
    leaver.sent += resumed.sent
    return stayer, leaver


def assert_strictly_increasing(socket: FakeSocket) -> None:
    offsets = [m["offset"] for m in stream_frames(socket)]
    assert offsets == sorted(set(offsets)), offsets


async def test_a_resumed_client_ends_with_exactly_the_stayer_s_events(autojump_clock: trio.abc.Clock) -> None:
    context = make_context()
    stayer, leaver = await run_with_a_stayer(context)
    connected = [m for m in leaver.sent if m["type"] == "connected"]
    assert "recovered" not in connected[0] and connected[1]["recovered"] is True
    assert events(leaver) == events(stayer) and len(events(stayer)) == 8
    assert_strictly_increasing(leaver)
    replay = leaver.sent[leaver.sent.index(connected[1]) + 1:]
    assert [m["type"] for m in replay] == ["funding_rate_update"] * 4 + ["market_stats"] + ["funding_rate_update"]


def publish_meanwhile(topics: StreamPublisher) -> None:
    for n in range(5):
        topics.publish_event(funding(200 + n), 0)


def trim_meanwhile(topics: StreamPublisher) -> None:
    for n in range(6):  # pushes every event the resuming client missed out of a 4-event history
        topics.publish_event(funding(300 + n), 0)


@pytest.mark.parametrize("read_first", [True, False], ids=["read-before-they-came", "read-after-they-came"])
async def test_events_published_while_the_history_answer_is_on_its_way_go_out_once_each(
    autojump_clock: trio.abc.Clock, read_first: bool,
) -> None:
    context = make_context(slow=True)
    assert isinstance(context.history, SlowHistory)
    # Read after: the answer also holds what was published while it was on its way.
    context.history.read_first = read_first
    stayer, leaver = await run_with_a_stayer(context, publish_meanwhile)
    assert events(leaver) == events(stayer) and len(events(stayer)) == 13
    assert_strictly_increasing(leaver)


async def test_history_trimmed_after_it_was_read_costs_nothing(autojump_clock: trio.abc.Clock) -> None:
    context = make_context(size=4, slow=True)
    stayer, leaver = await run_with_a_stayer(context, trim_meanwhile)
    assert [m.get("recovered") for m in leaver.sent if m["type"] == "connected"] == [None, True]
    assert events(leaver) == events(stayer)


async def test_history_trimmed_before_it_is_read_does_not_recover_and_says_so(autojump_clock: trio.abc.Clock) -> None:
    context = make_context(size=4, slow=True)
    assert isinstance(context.history, SlowHistory)
    context.history.read_first = False
    stayer, leaver = await run_with_a_stayer(context, trim_meanwhile)
    resumed_at = next(i for i, m in enumerate(leaver.sent) if m.get("recovered") is False)
    after = leaver.sent[resumed_at + 1:]
    assert after[0]["type"] == "market_stats"  # today's snapshot, then live
    assert_strictly_increasing(leaver)
    assert set(events(leaver)) < set(events(stayer))


async def test_another_epoch_or_an_offset_ahead_gets_the_snapshot_and_recovered_false(
    autojump_clock: trio.abc.Clock,
) -> None:
    context = make_context()
    topics = publisher(context)
    topics.publish_event(funding(1), 0)
    topics.publish_snapshot(stats(), 0)
    epoch = context.history.log_of(STATS).epoch
    head = context.history.log_of(STATS).head
    for since in (Since("0" * 12, 1), Since(epoch, head + 1)):
        async with client(context, since) as socket:
            pass
        assert socket.sent[0]["type"] == "connected" and socket.sent[0]["recovered"] is False, since
        assert [m["type"] for m in socket.sent[1:]] == ["market_stats"]


async def test_a_stream_s_frames_pending_on_both_subscriptions_go_out_in_offset_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    context = make_context()
    topics = publisher(context)
    async with client(context) as socket:
        socket.hold()
        topics.publish_event(funding(1), 0)  # the first one's send is held; the rest wait
        await trio.sleep(0.01)
        topics.publish_event(funding(2), 0)
        topics.publish_snapshot(stats(), 0)
        topics.publish_event(funding(3), 0)
        socket.release()
        await trio.sleep(0.1)
    assert [m["type"] for m in stream_frames(socket)] == [
        "funding_rate_update", "funding_rate_update", "market_stats", "funding_rate_update"]
    assert_strictly_increasing(socket)


async def test_since_on_the_multiplexed_path_resumes_and_a_bad_one_is_refused(autojump_clock: trio.abc.Clock) -> None:
    context = make_context()
    topics = publisher(context)
    first = topics.history.position(STATS)  # a position the client "saw"
    topics.publish_event(funding(1), 0)
    socket = FakeSocket()
    conn = Connection(socket.io(), context, endpoint="test", multiplexed=True, client="198.51.100.7")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve, None)
        for request in (
            {"op": "subscribe", "id": 1, "channel": "market_stats", "market_id": BTC,
             "since": {"epoch": first[1], "offset": first[0]}},
            {"op": "subscribe", "id": 2, "channel": "prices", "market_id": BTC, "since": {"epoch": "e", "offset": -4}},
            {"op": "subscribe", "id": 3, "channel": "prices", "market_id": BTC, "since": "yesterday"},
        ):
            await socket.inbox_send.send(json.dumps(request))
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert [m["type"] for m in socket.sent[:3]] == ["subscribed", "connected", "funding_rate_update"]
    assert socket.sent[1]["recovered"] is True
    errors = {m["id"]: m for m in socket.sent if m["type"] == "error"}
    assert errors[2]["code"] == "invalid_since" and "offset: expected an integer from 0 to" in errors[2]["message"]
    assert errors[3]["code"] == "invalid_since" and errors[3]["message"].startswith("since: expected")
    assert socket.closed is None


async def test_a_new_subscriber_gets_the_snapshot_and_the_events_published_since_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    context = make_context()
    topics = publisher(context)
    topics.publish_event(funding(1), 0)  # before the snapshot: in it
    topics.publish_snapshot(stats(), 0)
    topics.publish_event(funding(2), 0)  # after it, before anyone subscribed
    async with client(context) as socket:
        topics.publish_event(funding(3), 0)
        await trio.sleep(0.01)
    assert [m["type"] for m in socket.sent] == ["connected", "market_stats", "funding_rate_update",
                                                "funding_rate_update"]
    assert "recovered" not in socket.sent[0]
    assert_strictly_increasing(socket)
