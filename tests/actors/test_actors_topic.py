"""Topic fan-out: conflation, queues with overflow, sinks, receive."""

from __future__ import annotations

import collections

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from actors import Delivery, Policy, Sink, Subscription, SubscriptionClosed, SubscriptionStats, Topic


def test_conflate_take_returns_newest_with_skipped_count() -> None:
    topic: Topic[str] = Topic("prices")
    topic.publish("before")
    sub = topic.subscribe()
    assert sub.take() is None  # no replay of what was published before
    for item in "abc":
        topic.publish(item)
    assert sub.backlog == 1
    assert sub.take() == Delivery("c", skipped=2)
    assert sub.take() is None
    topic.publish("d")
    assert sub.take() == Delivery("d", skipped=0)
    assert sub.stats == SubscriptionStats(delivered=2, conflated=2)
    assert (topic.published, topic.latest) == (5, "d")


@pytest.mark.parametrize("policy", list(Policy))
def test_every_subscriber_gets_the_same_object(policy: Policy) -> None:
    topic: Topic[object] = Topic("t", policy=policy, capacity=4)
    subs = [topic.subscribe() for _ in range(3)]
    item = object()
    topic.publish(item)
    deliveries = [sub.take() for sub in subs]
    assert all(d is not None and d.item is item for d in deliveries)


def test_queue_overflow_closes_only_that_subscriber_after_it_drains() -> None:
    topic: Topic[int] = Topic("fills", policy=Policy.QUEUE, capacity=3)
    slow, fast = topic.subscribe(), topic.subscribe()
    for i in range(3):
        topic.publish(i)
        assert fast.take() == Delivery(i)
    assert slow.closed_reason is None and topic.subscriber_count == 2
    topic.publish(3)  # slow already holds 3: it is closed, the publisher goes on
    assert slow.closed_reason == "overflow"
    assert fast.closed_reason is None
    assert topic.subscriber_count == 1
    assert [d.item for d in (slow.take(), slow.take(), slow.take()) if d] == [0, 1, 2]
    with pytest.raises(SubscriptionClosed) as closed:
        slow.take()
    assert closed.value.reason == "overflow"
    assert fast.take() == Delivery(3)
    topic.publish(4)  # a closed subscriber is no longer fed
    assert slow.backlog == 0


def test_a_subscriber_that_never_reads_holds_one_item_and_costs_others_nothing() -> None:
    topic: Topic[int] = Topic("t")
    idle, reader = topic.subscribe(), topic.subscribe()
    for i in range(1000):
        topic.publish(i)
        assert reader.take() == Delivery(i)
    assert idle.backlog == 1
    assert idle.take() == Delivery(999, skipped=999)
    assert reader.stats == SubscriptionStats(delivered=1000, conflated=0)


def test_close_and_context_manager_unsubscribe() -> None:
    topic: Topic[int] = Topic("t", policy=Policy.QUEUE, capacity=8)
    with topic.subscribe() as sub:
        topic.publish(1)
        assert topic.subscriber_count == 1
    assert topic.subscriber_count == 0
    assert sub.closed_reason == "closed"
    with pytest.raises(SubscriptionClosed, match="closed"):
        sub.take()  # undelivered items are discarded on close
    topic.publish(2)
    sub.close()  # idempotent
    assert sub.backlog == 0


def test_views_share_the_topic_and_count_publishes() -> None:
    class Counter:
        messages_out = 0

    topic: Topic[int] = Topic("t")
    counter = Counter()
    view = topic._view(counter)
    sub = topic.subscribe()
    view.publish(7)
    assert view == topic and sub.topic is topic
    assert counter.messages_out == 1
    assert sub.take() == Delivery(7)


def test_invalid_topic_declarations_are_rejected() -> None:
    with pytest.raises(ValueError):
        Topic("t", policy=Policy.QUEUE, capacity=0)
    with pytest.raises(TypeError):
        Topic("t", policy="queue")  # type: ignore[arg-type]


async def test_one_sink_serves_many_subscriptions() -> None:
    sink = Sink()
    prices: Topic[int] = Topic("prices")
    fills: Topic[str] = Topic("fills", policy=Policy.QUEUE, capacity=4)
    price_sub, fill_sub = prices.subscribe(sink), fills.subscribe(sink)
    got: list[tuple[str, object]] = []
    wakeups = 0

    async def consumer() -> None:
        nonlocal wakeups
        while True:
            await sink.wait()
            wakeups += 1
            for sub in sink.pending():
                while (delivery := sub.take()) is not None:
                    got.append((sub.topic.name, delivery.item))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [] and wakeups == 0
        prices.publish(1)
        fills.publish("x")
        fills.publish("y")
        prices.publish(2)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [("prices", 2), ("fills", "x"), ("fills", "y")]
        assert wakeups == 1 and not sink
        assert price_sub.stats == SubscriptionStats(delivered=1, conflated=1)
        assert fill_sub.stats == SubscriptionStats(delivered=2, conflated=0)
        nursery.cancel_scope.cancel()


def test_a_partly_drained_subscription_stays_pending() -> None:
    sink = Sink()
    topic: Topic[int] = Topic("q", policy=Policy.QUEUE, capacity=4)
    sub = topic.subscribe(sink)
    topic.publish(1)
    topic.publish(2)
    assert sink.pending() == [sub]
    assert sub.take() == Delivery(1)
    assert sink.pending() == [sub]  # nothing is lost if the consumer stops here
    assert sub.take() == Delivery(2)
    assert sink.pending() == [] and not sink


def test_an_overflowed_subscription_is_pending_until_its_closure_is_seen() -> None:
    sink = Sink()
    topic: Topic[int] = Topic("q", policy=Policy.QUEUE, capacity=1)
    sub = topic.subscribe(sink)
    topic.publish(1)
    topic.publish(2)
    assert sub.closed_reason == "overflow" and sink.pending() == [sub]
    assert sub.take() == Delivery(1)
    assert sink.pending() == [sub]
    with pytest.raises(SubscriptionClosed):
        sub.take()
    assert sink.pending() == []


async def test_sink_wait_is_cancellable_and_single_waiter() -> None:
    sink = Sink()
    topic: Topic[int] = Topic("t")
    topic.subscribe(sink)
    with trio.move_on_after(1) as scope:
        await sink.wait()
    assert scope.cancelled_caught
    topic.publish(1)  # must not reschedule the task that gave up
    await sink.wait()  # pending now: returns at once
    assert sink

    idle = Sink()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(idle.wait)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await idle.wait()
        nursery.cancel_scope.cancel()


async def test_receive_waits_for_an_item_then_reports_closure() -> None:
    topic: Topic[int] = Topic("t", policy=Policy.QUEUE, capacity=4)
    sub = topic.subscribe()
    received: list[int] = []
    closed: list[str] = []

    async def reader() -> None:
        try:
            while True:
                received.append((await sub.receive()).item)
        except SubscriptionClosed as error:
            closed.append(error.reason)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        topic.publish(1)
        topic.publish(2)
        await trio.testing.wait_all_tasks_blocked()
        assert received == [1, 2]
        sub.close()  # wakes the blocked reader
    assert closed == ["closed"]


async def test_receive_requires_a_private_sink() -> None:
    sub: Subscription[int] = Topic[int]("t").subscribe(Sink())
    with pytest.raises(RuntimeError):
        await sub.receive()


# -- properties -----------------------------------------------------------------

operations = st.lists(st.sampled_from(["publish", "take"]), max_size=60)


@given(capacity=st.integers(1, 5), published_before=st.integers(0, 3), ops=operations)
def test_queue_delivers_everything_in_order_until_overflow(
    capacity: int, published_before: int, ops: list[str]
) -> None:
    topic: Topic[int] = Topic("q", policy=Policy.QUEUE, capacity=capacity)
    for i in range(published_before):
        topic.publish(-1 - i)
    sub = topic.subscribe()
    expected: collections.deque[int] = collections.deque()
    closed = False
    next_item = 0
    for op in ops:
        if op == "publish":
            if not closed:
                if len(expected) >= capacity:
                    closed = True
                else:
                    expected.append(next_item)
            topic.publish(next_item)
            next_item += 1
        elif expected:
            assert sub.take() == Delivery(expected.popleft())
        elif closed:
            with pytest.raises(SubscriptionClosed):
                sub.take()
        else:
            assert sub.take() is None
        assert sub.closed_reason == ("overflow" if closed else None)
        assert sub.backlog == len(expected)


@given(published_before=st.integers(0, 3), ops=operations)
def test_conflate_always_hands_out_the_newest_and_counts_every_skip(
    published_before: int, ops: list[str]
) -> None:
    topic: Topic[int] = Topic("c")
    for i in range(published_before):
        topic.publish(-1 - i)
    sub = topic.subscribe()
    published = 0
    last_taken = 0  # index (1-based) of the publish last delivered
    for op in ops:
        if op == "publish":
            published += 1
            topic.publish(published)
        else:
            delivery = sub.take()
            if published == last_taken:
                assert delivery is None
            else:
                assert delivery == Delivery(published, skipped=published - last_taken - 1)
                last_taken = published
    sub.take()  # catch up
    stats = sub.stats
    assert stats.delivered + stats.conflated == published
