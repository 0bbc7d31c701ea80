"""Supervision: ordered start, strategies, restart types, intensity, backoff,
shutdown and cancellation. All on trio's virtual clock."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

import pytest
import trio

import actors
from actors import Backoff, ChildSpec, Intensity, Restart, Strategy, Supervisor, open_system

if TYPE_CHECKING:
    from conftest import Log, ProbeSpec

# No jitter, so restart times are exact.
EXACT = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.0, reset_after=30.0)
LENIENT = Intensity(max_restarts=100, within=10.0)


def child_node(snapshot: dict, *path: str) -> dict:
    node = snapshot["root"]
    for name in path:
        node = next(child for child in node["children"] if child["name"] == name)
    return node


async def test_children_start_in_order_each_ready_before_the_next(autojump_clock, log: Log, probe: ProbeSpec):
    inner = Supervisor.spec("inner", [probe("b", setup_delay=1.0), probe("c", setup_delay=1.0)])
    root = Supervisor.spec("root", [probe("a", setup_delay=1.0), inner, probe("d", setup_delay=1.0)])
    async with open_system(root) as system:
        # open_system returns once the root is ready, i.e. once everything is.
        assert trio.current_time() == 4.0
        assert log.of("setup", "ready") == [
            (kind, name, 1) for name in "abcd" for kind in ("setup", "ready")
        ]
        snapshot = system.registry.snapshot()
        assert child_node(snapshot, "inner")["state"] == "running"
        assert [c["name"] for c in child_node(snapshot, "inner")["children"]] == ["b", "c"]


async def test_a_child_failing_before_ready_is_retried_and_later_children_wait(
    autojump_clock, log: Log, probe: ProbeSpec
):
    root = Supervisor.spec(
        "root", [probe("a"), probe("b", fail_setup={1}), probe("c")], backoff=EXACT
    )
    async with open_system(root):
        assert trio.current_time() == 1.0  # b's first restart delay
        assert log.of("setup", "ready") == [
            ("setup", "a", 1), ("ready", "a", 1),
            ("setup", "b", 1),
            ("setup", "b", 2), ("ready", "b", 2),
            ("setup", "c", 1), ("ready", "c", 1),
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "stopped", "restarted"),
    [
        (Strategy.ONE_FOR_ONE, "", "b"),
        (Strategy.ONE_FOR_ALL, "dca", "abcd"),
        (Strategy.REST_FOR_ONE, "dc", "bcd"),
    ],
)
async def test_strategies_restart_the_right_children_in_the_right_order(
    autojump_clock, log: Log, probe: ProbeSpec, strategy: Strategy, stopped: str, restarted: str
):
    root = Supervisor.spec("root", [probe(n) for n in "abcd"], strategy=strategy, backoff=EXACT)
    async with open_system(root) as system:
        log.clear()
        failed_at = trio.current_time()
        system.registry.ref("b").send_nowait("boom")
        await trio.sleep(5)
        assert log.of("stop") == [("stop", name, 1) for name in stopped]
        assert log.of("setup") == [("setup", name, 2) for name in restarted]
        assert all(t == failed_at + 1.0 for name in restarted for t in log.times("setup", name))
        snapshot = system.registry.snapshot()
        for name in "abcd":
            node = child_node(snapshot, name)
            assert node["state"] == "running"
            assert node["incarnation"] == (2 if name in restarted else 1)
        log.clear()


async def test_a_group_restart_keeps_its_order_when_the_failed_child_fails_again(
    autojump_clock, log: Log, probe: ProbeSpec
):
    children = [probe("a"), probe("b", fail_setup={2}), probe("c")]
    root = Supervisor.spec("root", children, strategy=Strategy.REST_FOR_ONE, intensity=LENIENT, backoff=EXACT)
    async with open_system(root) as system:
        log.clear()
        system.registry.ref("b").send_nowait("boom")
        await trio.sleep(10)
        # b2 fails in setup at +1; c waits for b3 (at +1 +2) instead of starting.
        assert [(e.kind, e.name, e.incarnation, e.at) for e in log.entries if e.kind == "setup"] == [
            ("setup", "b", 2, 1.0), ("setup", "b", 3, 3.0), ("setup", "c", 2, 3.0),
        ]  # fmt: skip


async def test_a_sibling_failure_does_not_cut_short_a_longer_backoff(autojump_clock, log: Log, probe: ProbeSpec):
    children = [probe("a"), probe("b", fail_setup={2, 3}), probe("c")]
    root = Supervisor.spec("root", children, strategy=Strategy.REST_FOR_ONE, intensity=LENIENT, backoff=EXACT)
    async with open_system(root) as system:
        system.registry.ref("b").send_nowait("boom")  # b back at 1 (fails), 3 (fails), 7
        await trio.sleep(4)
        system.registry.ref("a").send_nowait("boom")  # a back at 5; b keeps its 7
        await trio.sleep(10)
    assert log.times("setup", "a") == [0.0, 5.0]
    assert log.times("setup", "b") == [0.0, 1.0, 3.0, 7.0]
    assert log.times("setup", "c") == [0.0, 7.0]  # taken down with b, restarted after it


async def test_one_for_one_restarts_do_not_wait_for_a_sibling_backing_off(
    autojump_clock, log: Log, probe: ProbeSpec
):
    children = [probe("a", fail_setup={2, 3}), probe("b")]
    root = Supervisor.spec("root", children, intensity=LENIENT, backoff=EXACT)
    async with open_system(root) as system:
        system.registry.ref("a").send_nowait("boom")  # a back at 1 (fails), 3 (fails), 7
        await trio.sleep(4)
        system.registry.ref("b").send_nowait("boom")  # b back at 5, not after a
        await trio.sleep(10)
    assert log.times("setup", "b") == [0.0, 5.0]
    assert log.times("setup", "a") == [0.0, 1.0, 3.0, 7.0]


@pytest.mark.parametrize(
    ("restart", "ending", "restarted"),
    [
        (Restart.PERMANENT, "exit", True),
        (Restart.PERMANENT, "boom", True),
        (Restart.TRANSIENT, "exit", False),
        (Restart.TRANSIENT, "boom", True),
        (Restart.TEMPORARY, "exit", False),
        (Restart.TEMPORARY, "boom", False),
    ],
)
async def test_restart_types(autojump_clock, log: Log, restart: Restart, ending: str, restarted: bool):
    class Ender(actors.Actor):
        """Ends after its first message: "boom" fails, "exit" returns."""

        async def run(self, ctx: actors.ActorContext) -> None:
            log.add("setup", ctx.name, ctx.incarnation)
            ctx.ready()
            if await ctx.mailbox.receive() == "boom":
                raise ValueError("boom")

    root = Supervisor.spec("root", [ChildSpec("x", Ender, restart=restart)], backoff=EXACT)
    async with open_system(root) as system:
        system.registry.ref("x").send_nowait(ending)
        await trio.sleep(5)
        supervisor = system.registry.lookup_supervisor("root")
        if restarted:
            assert log.of("setup") == [("setup", "x", 1), ("setup", "x", 2)]
            assert supervisor.child_names() == ["x"]
        else:
            assert log.of("setup") == [("setup", "x", 1)]
            assert supervisor.child_names() == []
            with pytest.raises(actors.ActorNotFound):
                system.registry.ref("x").send_nowait("hello")


async def test_a_temporary_sibling_taken_down_by_one_for_all_is_not_restarted(
    autojump_clock, log: Log, probe: ProbeSpec
):
    children = [probe("a"), probe("t", restart=Restart.TEMPORARY), probe("c")]
    root = Supervisor.spec("root", children, strategy=Strategy.ONE_FOR_ALL, backoff=EXACT)
    async with open_system(root) as system:
        system.registry.ref("c").send_nowait("boom")
        await trio.sleep(5)
        assert log.of("stop") == [("stop", "t", 1), ("stop", "a", 1)]
        assert system.registry.lookup_supervisor("root").child_names() == ["a", "c"]
        assert "t" not in system.registry


async def test_exceeding_the_intensity_stops_the_children_and_escalates_to_the_parent(
    autojump_clock, log: Log, probe: ProbeSpec
):
    # The crasher fails in setup from its 2nd incarnation on: restarts at +0,
    # +1, +3, +7 are 4 within 10 s, one more than the 3 allowed.
    inner = Supervisor.spec(
        "inner",
        [probe("steady"), probe("crasher", fail_setup=range(2, 100))],
        intensity=Intensity(max_restarts=3, within=10.0),
        backoff=EXACT,
    )
    root = Supervisor.spec("root", [inner], intensity=LENIENT, backoff=EXACT)
    async with open_system(root) as system:
        log.clear()
        t0 = trio.current_time()
        system.registry.ref("crasher").send_nowait("boom")
        await trio.sleep(7.5)
        assert log.times("setup", "crasher") == [t0 + 1, t0 + 3, t0 + 7]
        assert log.of("stop") == [("stop", "steady", 1)]  # inner stopped its children
        node = child_node(system.registry.snapshot(), "inner")
        assert node["state"] == "backing_off"
        assert node["last_failure"]["type"] == "RestartIntensityExceeded"
        assert "crasher" not in system.registry  # the old inner's children are gone
        await trio.sleep(1)
        # The root restarted inner (one_for_one): a fresh subtree.
        node = child_node(system.registry.snapshot(), "inner")
        assert (node["state"], node["incarnation"]) == ("running", 2)
        assert [(c["name"], c["incarnation"]) for c in node["children"]] == [("steady", 1), ("crasher", 1)]
        assert log.of("setup")[-2:] == [("setup", "steady", 1), ("setup", "crasher", 1)]


@pytest.mark.parametrize(("max_restarts", "escalates"), [(1, True), (2, False)])
async def test_intensity_counts_restarts_within_the_sliding_window(
    autojump_clock, log: Log, probe: ProbeSpec, max_restarts: int, escalates: bool
):
    # A failure every 6 s: any 10 s window holds 2 restarts.
    quick = Backoff(initial=0.5, multiplier=1.0, jitter=0.0)
    inner = Supervisor.spec(
        "inner", [probe("x")], intensity=Intensity(max_restarts=max_restarts, within=10.0), backoff=quick
    )
    root = Supervisor.spec("root", [inner], intensity=LENIENT, backoff=EXACT)
    async with open_system(root) as system:
        for _ in range(6):
            system.registry.ref("x").send_nowait("boom")
            await trio.sleep(6)
        inner_node = child_node(system.registry.snapshot(), "inner")
        assert (inner_node["restarts"] > 0) is escalates
        if not escalates:
            assert child_node(system.registry.snapshot(), "inner", "x")["restarts"] == 6


def test_backoff_delay_formula_and_jitter_bounds():
    class Extreme:
        def __init__(self, pick_high: bool) -> None:
            self.pick_high = pick_high

        def uniform(self, low: float, high: float) -> float:
            return high if self.pick_high else low

    backoff = Backoff(initial=0.1, maximum=10.0, multiplier=2.0, jitter=0.2)
    for attempt in range(12):
        base = min(10.0, 0.1 * 2.0**attempt)
        assert backoff.delay(attempt, Extreme(False)) == pytest.approx(base * 0.8)  # type: ignore[arg-type]
        assert backoff.delay(attempt, Extreme(True)) == pytest.approx(base * 1.2)  # type: ignore[arg-type]
    assert backoff.delay(100_000, Extreme(True)) == pytest.approx(12.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Backoff(jitter=1.0)


async def test_restart_delays_grow_exponentially_with_seeded_jitter(autojump_clock, log: Log, probe: ProbeSpec):
    backoff = Backoff(initial=1.0, maximum=5.0, multiplier=2.0, jitter=0.2, reset_after=1000.0)
    spec = probe("x", fail_setup=range(2, 8))  # incarnations 2..7 fail at once
    root = Supervisor.spec("root", [spec], intensity=LENIENT, backoff=backoff, rng=random.Random(42))
    async with open_system(root) as system:
        t0 = trio.current_time()
        system.registry.ref("x").send_nowait("boom")
        await trio.sleep(0.5)
        node = child_node(system.registry.snapshot(), "x")
        assert node["state"] == "backing_off" and node["restart_in"] > 0
        await trio.sleep(60)
    setups = log.times("setup", "x")
    assert len(setups) == 8
    gaps = [setups[1] - t0] + [later - earlier for earlier, later in zip(setups[1:], setups[2:])]
    reference = random.Random(42)
    expected = [min(5.0, 2.0**k) * (1 + reference.uniform(-0.2, 0.2)) for k in range(7)]
    assert gaps == pytest.approx(expected)
    for k, gap in enumerate(gaps):
        assert 0.8 * min(5.0, 2.0**k) <= gap <= 1.2 * min(5.0, 2.0**k)
    assert len({round(gap / min(5.0, 2.0**k), 9) for k, gap in enumerate(gaps)}) > 1  # jitter varies


async def test_backoff_resets_after_a_stable_run(autojump_clock, log: Log, probe: ProbeSpec):
    backoff = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.0, reset_after=10.0)
    root = Supervisor.spec("root", [probe("x")], intensity=LENIENT, backoff=backoff)
    async with open_system(root) as system:
        ref = system.registry.ref("x")
        t0 = trio.current_time()
        ref.send_nowait("boom")  # level 0: back at +1
        await trio.sleep(1.5)
        ref.send_nowait("boom")  # ran 0.5 s: level 1, back at +3.5
        await trio.sleep(12.5)
        ref.send_nowait("boom")  # ran 10.5 s: reset, back at +15
        await trio.sleep(5)
    assert log.times("setup", "x")[1:] == [t0 + 1, t0 + 3.5, t0 + 15]


async def test_shutdown_is_in_reverse_order_and_a_stuck_child_is_cancelled_at_its_timeout(
    autojump_clock, log: Log, probe: ProbeSpec
):
    children = [probe("a"), probe("b", stop_delay=math.inf, shutdown_timeout=2.0), probe("c")]
    async with open_system(Supervisor.spec("root", children)):
        log.clear()
        t0 = trio.current_time()
    assert log.of("stop", "stopped") == [
        ("stop", "c", 1), ("stopped", "c", 1),
        ("stop", "b", 1),  # never finishes: cancelled after 2 s
        ("stop", "a", 1), ("stopped", "a", 1),
    ]  # fmt: skip
    assert log.times("stop", "c") == [t0]
    assert log.times("stop", "a") == [t0 + 2.0]


async def test_a_graceful_stop_finishes_the_current_message_then_calls_on_stop(
    autojump_clock, log: Log, probe: ProbeSpec
):
    async with open_system(Supervisor.spec("root", [probe("a")])) as system:
        ref = system.registry.ref("a")
        ref.send_nowait(("sleep", 3.0))
        ref.send_nowait("queued")
        await trio.sleep(1)
        t0 = trio.current_time()
    assert log.of("handling", "handled", "msg", "stop", "stopped") == [
        ("handling", "a", 1), ("handled", "a", 1), ("stop", "a", 1), ("stopped", "a", 1),
    ]  # fmt: skip
    assert log.times("stop", "a") == [t0 + 2.0]


@pytest.mark.parametrize(("setup_delay", "stops", "ends_at"), [(2.0, "cba", 3.0), (10.0, "ba", 6.0)])
async def test_a_stop_during_start_stops_the_started_children_gracefully(
    autojump_clock, log: Log, probe: ProbeSpec, setup_delay: float, stops: str, ends_at: float
):
    c = probe("c", setup_delay=setup_delay, stop_delay=1.0, shutdown_timeout=5.0)
    inner = Supervisor.spec("inner", [probe("b"), c])
    # max_restarts=0: the subtree ending early must not count as a restart.
    root = Supervisor.spec("root", [probe("a"), inner], intensity=Intensity(max_restarts=0, within=10.0))
    system = actors.ActorSystem()
    states: list[str] = []

    async def watch_c() -> None:
        await trio.sleep(2.5)
        states.append(child_node(system.registry.snapshot(), "inner", "c")["state"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(system.run, root)
        nursery.start_soon(watch_c)
        await trio.sleep(1)  # c is still in setup
        await system.stop()
    # c gets its shutdown timeout to finish starting (then it stops at once),
    # or is cancelled; the others stop gracefully, in reverse order.
    assert log.of("stop") == [("stop", name, 1) for name in stops]
    assert trio.current_time() == ends_at
    assert states == ["stopping"]


async def test_cancellation_from_outside_propagates_through_nested_supervisors(
    autojump_clock, log: Log, probe: ProbeSpec
):
    inner = Supervisor.spec("inner", [probe("a"), probe("b")])
    root = Supervisor.spec("root", [inner, probe("c")])
    with trio.move_on_after(5) as scope:
        async with open_system(root) as system:
            system.registry.ref("b").send_nowait(("sleep", 100.0))
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() == 5.0
    assert log.of("setup") == [("setup", name, 1) for name in "abc"]  # nothing restarted
    assert log.of("handled", "stop") == []  # torn down, not stopped gracefully


async def test_base_exceptions_from_a_child_are_never_swallowed(autojump_clock, log: Log, probe: ProbeSpec):
    class Interrupter(actors.Actor):
        async def handle(self, msg: object) -> None:
            raise KeyboardInterrupt

    root = Supervisor.spec("root", [probe("a"), ChildSpec("k", Interrupter)], intensity=LENIENT)
    interrupted = False
    try:
        async with open_system(root) as system:
            system.registry.ref("k").send_nowait("now")
            await trio.sleep(10)
    except* KeyboardInterrupt:
        interrupted = True
    assert interrupted
    assert trio.current_time() == 0.0
    assert log.of("setup") == [("setup", "a", 1)]


async def test_a_failing_root_ends_the_system_with_its_exception(autojump_clock, probe: ProbeSpec):
    root = Supervisor.spec("root", [probe("a")], intensity=Intensity(max_restarts=0, within=10.0))
    escalated: list[BaseException] = []
    try:
        async with open_system(root) as system:
            system.registry.ref("a").send_nowait("boom")
            await trio.sleep_forever()
    except* actors.RestartIntensityExceeded as group:
        escalated.extend(group.exceptions)
    assert len(escalated) == 1
    assert isinstance(escalated[0].__cause__, ValueError)


def test_duplicate_child_names_are_rejected():
    spec = ChildSpec("x", actors.Actor)
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor([spec, spec])


async def test_failing_a_supervisor_restarts_its_whole_subtree(autojump_clock, log: Log, probe: ProbeSpec):
    inner = Supervisor.spec("inner", [probe("a"), probe("b")])
    root = Supervisor.spec("root", [inner, probe("c")], backoff=EXACT)
    async with open_system(root) as system:
        system.registry.fail_actor("inner", "drill")
        await trio.sleep(2)
        # The children were torn down with it (no graceful stop) and come back
        # as a fresh subtree; the sibling is untouched.
        assert log.of("setup") == [("setup", "a", 1), ("setup", "b", 1), ("setup", "c", 1),
                                   ("setup", "a", 1), ("setup", "b", 1)]  # fmt: skip
        assert log.of("stop") == []
        node = child_node(system.registry.snapshot(), "inner")
        assert (node["incarnation"], node["last_failure"]["type"]) == (2, "InjectedFailure")


async def test_a_system_can_run_in_a_nursery_of_ones_own(autojump_clock, log: Log, probe: ProbeSpec):
    system = actors.ActorSystem()
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run, Supervisor.spec("root", [probe("a")]))
        assert system.registry.names() == ["root", "a"]
        await system.stop()
    assert log.of("stop", "stopped") == [("stop", "a", 1), ("stopped", "a", 1)]
    assert system.registry.names() == []
    assert system.registry.snapshot()["root"]["state"] == "stopped"
