"""Refs, mailboxes, request/reply, the registry and the actor context."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import actors
from actors import ChildSpec, Intensity, Supervisor, open_system

if TYPE_CHECKING:
    from conftest import Log, ProbeSpec

LENIENT = Intensity(max_restarts=100, within=10.0)


async def test_request_reply_and_failure_reply(autojump_clock, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [probe("a")])) as system:
        ref = system.registry.ref("a")
        assert await ref.request(lambda reply: ("echo", 42, reply), timeout=1) == 42
        with pytest.raises(LookupError, match="no such thing"):
            await ref.request(lambda reply: ("fail", LookupError("no such thing"), reply), timeout=1)


async def test_request_timeout_and_a_late_reply_is_dropped_harmlessly(autojump_clock, log: Log, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [probe("a")])) as system:
        ref = system.registry.ref("a")
        with pytest.raises(actors.RequestTimeout):
            await ref.request(lambda reply: ("late-echo", 2.0, "late", reply), timeout=1)
        assert trio.current_time() == 1.0
        await trio.sleep(2)
        assert log.of("replied-late") == [("replied-late", "a", 1)]
        node = system.registry.snapshot()["root"]["children"][0]
        assert (node["state"], node["incarnation"], node["last_failure"]) == ("running", 1, None)
        assert await ref.request(lambda reply: ("echo", "still fine", reply), timeout=1) == "still fine"


async def test_a_reply_can_be_sent_only_once():
    send_channel, receive_channel = trio.open_memory_channel[tuple[bool, object]](1)
    reply: actors.Reply[int] = actors.Reply(send_channel)
    reply.send(1)
    with pytest.raises(RuntimeError):
        reply.send(2)
    assert reply.answered and receive_channel.receive_nowait() == (True, 1)


async def test_mailbox_is_bounded_and_async_send_waits_for_room(autojump_clock, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [probe("a")])) as system:
        ref = system.registry.ref("a")
        ref.send_nowait(("sleep", 5.0))
        await trio.testing.wait_all_tasks_blocked()  # now busy: the mailbox fills up
        for i in range(8):  # Probe.mailbox_capacity
            ref.send_nowait(i)
        with pytest.raises(actors.MailboxFull):
            ref.send_nowait("one too many")
        await ref.send("waits for room")
        assert trio.current_time() == 5.0
        with pytest.raises(actors.ActorNotFound):
            system.registry.ref("nobody").send_nowait("hello")
        with pytest.raises(actors.ActorNotFound):
            await system.registry.ref("nobody").send("hello")


async def test_a_restarted_actor_keeps_its_name_and_its_queued_messages(autojump_clock, log: Log, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [probe("a")], intensity=LENIENT)) as system:
        ref = system.registry.ref("a")
        for msg in ("boom", "m1", "m2"):  # queued together; "boom" fails the first incarnation
            ref.send_nowait(msg)
        await trio.sleep(5)
        assert log.of("msg") == [("msg", "a", 2), ("msg", "a", 2)]  # "boom" itself is lost
        ref.send_nowait("m3")
        await trio.sleep(0)
        assert log.of("msg")[-1] == ("msg", "a", 2)


class Publisher(actors.Actor):
    """Publishes (incarnation, msg) for each message; fails on "boom"."""

    async def setup(self, ctx: actors.ActorContext) -> None:
        self.ctx = ctx
        self.ticks = ctx.topic("ticks", policy=actors.Policy.QUEUE, capacity=16)
        self.peer = ctx.ref("sink")

    async def handle(self, msg: object) -> None:
        if msg == "boom":
            raise ValueError("boom")
        self.ticks.publish((self.ctx.incarnation, msg))
        self.peer.send_nowait(msg)


async def test_a_topic_subscription_survives_the_publishers_restart(autojump_clock, probe: ProbeSpec):
    root = Supervisor.spec("root", [probe("sink"), ChildSpec("pub", Publisher)], intensity=LENIENT)
    async with open_system(root) as system:
        topic = system.registry.topic("ticks", policy=actors.Policy.QUEUE, capacity=16)
        with topic.subscribe() as sub:
            ref = system.registry.ref("pub")
            ref.send_nowait("a")
            ref.send_nowait("boom")
            await trio.sleep(5)
            ref.send_nowait("b")
            assert (await sub.receive()).item == (1, "a")
            assert (await sub.receive()).item == (2, "b")
            assert sub.topic is system.registry.topic("ticks", policy=actors.Policy.QUEUE, capacity=16)
        node = system.registry.snapshot()["root"]["children"][1]
        assert node["messages_out"] == 4  # 2 publishes + 2 sends through ctx.ref
        assert node["topics"] == [{"name": "ticks", "subscribers": 0}]


async def test_topic_declarations_must_agree():
    registry = actors.Registry()
    registry.topic("t", policy=actors.Policy.QUEUE, capacity=4)
    with pytest.raises(ValueError):
        registry.topic("t")


async def test_only_a_topic_without_subscribers_can_be_discarded():
    registry = actors.Registry()
    topic = registry.topic("positions/0xabc")
    with topic.subscribe():
        assert not registry.discard_topic("positions/0xabc")
        assert registry.topic("positions/0xabc") is topic
    assert registry.discard_topic("positions/0xabc")
    assert registry.topics() == [] and not registry.discard_topic("positions/0xabc")
    assert registry.topic("positions/0xabc") is not topic


async def test_fail_actor_injects_a_failure(autojump_clock, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [probe("a")])) as system:
        system.registry.fail_actor("a", "rehearsal")
        await trio.sleep(0.01)
        node = system.registry.snapshot()["root"]["children"][0]
        assert node["state"] == "backing_off"
        assert (node["last_failure"]["type"], node["last_failure"]["message"]) == ("InjectedFailure", "rehearsal")
        with pytest.raises(actors.ActorNotRunning):
            system.registry.fail_actor("a", "again")
        with pytest.raises(actors.ActorNotFound):
            system.registry.fail_actor("nobody", "x")
        await trio.sleep(1)
        assert system.registry.snapshot()["root"]["children"][0]["incarnation"] == 2


async def test_a_helper_task_failure_fails_the_actor(autojump_clock, log: Log, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [probe("a")])) as system:
        system.registry.ref("a").send_nowait("crash-helper")
        await trio.sleep(1)
        node = system.registry.snapshot()["root"]["children"][0]
        assert node["last_failure"]["type"] == "KeyError"  # unwrapped from the nursery's group
        assert node["incarnation"] == 2


async def test_helper_tasks_are_cancelled_when_the_actor_stops_and_custom_run_loops_stop_gracefully(
    autojump_clock, log: Log
):
    class Ticker(actors.Actor):
        """A custom run(): ticks from a helper task until asked to stop."""

        async def run(self, ctx: actors.ActorContext) -> None:
            ctx.nursery.start_soon(self.tick, ctx)
            ctx.ready()
            await ctx.wait_stop_requested()
            assert ctx.stop_requested
            log.add("flush", ctx.name, ctx.incarnation)

        async def tick(self, ctx: actors.ActorContext) -> None:
            try:
                while True:
                    await trio.sleep(1)
                    log.add("tick", ctx.name, ctx.incarnation)
            except trio.Cancelled:
                log.add("helper-cancelled", ctx.name, ctx.incarnation)
                raise

    async with open_system(Supervisor.spec("root", [ChildSpec("t", Ticker)])):
        await trio.sleep(3.5)
    assert log.of("tick", "flush", "helper-cancelled") == [
        ("tick", "t", 1), ("tick", "t", 1), ("tick", "t", 1), ("flush", "t", 1), ("helper-cancelled", "t", 1),
    ]  # fmt: skip


async def test_closing_ctx_mailbox_does_not_break_the_slot(autojump_clock, log: Log):
    class Closer(actors.Actor):
        async def run(self, ctx: actors.ActorContext) -> None:
            ctx.ready()
            msg = await ctx.mailbox.receive()
            log.add(str(msg), ctx.name, ctx.incarnation)
            ctx.mailbox.close()
            raise ValueError("closed my mailbox")

    async with open_system(Supervisor.spec("root", [ChildSpec("c", Closer)])) as system:
        ref = system.registry.ref("c")
        ref.send_nowait("first")
        await trio.sleep(1)
        ref.send_nowait("second")
        await trio.sleep(0.01)
    assert log.of("first", "second") == [("first", "c", 1), ("second", "c", 2)]


async def test_unhandled_messages_fail_the_default_actor(autojump_clock):
    class Silent(actors.Actor):
        pass

    assert Silent.kind == "Silent"
    async with open_system(Supervisor.spec("root", [ChildSpec("s", Silent)])) as system:
        system.registry.ref("s").send_nowait("hello")
        await trio.sleep(0.01)
        failure = system.registry.snapshot()["root"]["children"][0]["last_failure"]
        assert failure["type"] == "NotImplementedError"
