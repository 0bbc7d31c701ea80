"""Dynamic children: start_child / stop_child on a running supervisor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import actors
from actors import Intensity, Supervisor, open_system

if TYPE_CHECKING:
    from conftest import Log, ProbeSpec

SESSIONS = Supervisor.spec("sessions", intensity=Intensity(max_restarts=0, within=10.0))


async def test_start_child_returns_once_the_child_is_ready(autojump_clock, log: Log, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [SESSIONS])) as system:
        sessions = system.registry.lookup_supervisor("sessions")
        ref = await sessions.start_child(probe("user-1", setup_delay=2.0))
        assert trio.current_time() == 2.0
        assert log.of("setup", "ready") == [("setup", "user-1", 1), ("ready", "user-1", 1)]
        assert ref == system.registry.ref("user-1")
        assert sessions.child_names() == ["user-1"]
        await ref.send("hello")
        await trio.sleep(0)
        assert log.of("msg") == [("msg", "user-1", 1)]


async def test_stop_child_stops_gracefully_removes_and_frees_the_name(autojump_clock, log: Log, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [SESSIONS])) as system:
        sessions = system.registry.lookup_supervisor("sessions")
        await sessions.start_child(probe("user-1"))
        await sessions.start_child(probe("user-2"))
        await sessions.stop_child("user-1")
        assert log.of("stop", "stopped") == [("stop", "user-1", 1), ("stopped", "user-1", 1)]
        assert sessions.child_names() == ["user-2"]
        with pytest.raises(actors.ActorNotFound):
            system.registry.ref("user-1").send_nowait("hello")
        with pytest.raises(actors.ActorNotFound):
            await sessions.stop_child("user-1")
        await sessions.start_child(probe("user-1"))
        assert sessions.child_names() == ["user-2", "user-1"]


async def test_a_stuck_child_is_cancelled_at_its_shutdown_timeout(autojump_clock, log: Log, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [SESSIONS])) as system:
        sessions = system.registry.lookup_supervisor("sessions")
        await sessions.start_child(probe("stuck", stop_delay=100.0, shutdown_timeout=3.0))
        await sessions.stop_child("stuck")
        assert trio.current_time() == 3.0
        assert log.of("stop", "stopped") == [("stop", "stuck", 1)]
        assert sessions.child_names() == []


async def test_names_are_unique_across_the_whole_tree(autojump_clock, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [probe("market"), SESSIONS])) as system:
        sessions = system.registry.lookup_supervisor("sessions")
        with pytest.raises(actors.DuplicateName):
            await sessions.start_child(probe("market"))
        await sessions.start_child(probe("user"))
        with pytest.raises(actors.DuplicateName):
            await sessions.start_child(probe("user"))


async def test_a_child_failing_before_ready_is_reported_and_not_kept(autojump_clock, log: Log, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [SESSIONS])) as system:
        sessions = system.registry.lookup_supervisor("sessions")
        with pytest.raises(actors.ChildStartFailed) as failed:
            await sessions.start_child(probe("bad", fail_setup={1}))
        assert isinstance(failed.value.__cause__, ValueError)
        assert sessions.child_names() == [] and "bad" not in system.registry
        # No restart was counted: with max_restarts=0 a counted one would have
        # escalated and replaced the supervisor.
        await sessions.start_child(probe("good"))
        assert system.registry.lookup_supervisor("sessions") is sessions


async def test_dynamic_children_are_supervised_like_static_ones(autojump_clock, log: Log, probe: ProbeSpec):
    root = Supervisor.spec("root", [Supervisor.spec("sessions")])
    async with open_system(root) as system:
        sessions = system.registry.lookup_supervisor("sessions")
        ref = await sessions.start_child(probe("user"))
        ref.send_nowait("boom")
        await trio.sleep(1)
        assert log.of("setup") == [("setup", "user", 1), ("setup", "user", 2)]


async def test_commands_fail_once_the_supervisor_has_stopped(autojump_clock, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [SESSIONS])) as system:
        sessions = system.registry.lookup_supervisor("sessions")
    with pytest.raises(actors.ActorNotRunning):
        await sessions.start_child(probe("late"))


@pytest.mark.parametrize(("setup_delay", "ends_at", "stopped"), [(2.0, 2.0, True), (100.0, 6.0, False)])
async def test_a_stop_lets_a_start_in_progress_finish_within_its_timeout(
    autojump_clock, log: Log, probe: ProbeSpec, setup_delay: float, ends_at: float, stopped: bool
):
    outcome: list[BaseException] = []

    async def start_slow_child(sessions: Supervisor) -> None:
        try:
            await sessions.start_child(probe("slow", setup_delay=setup_delay, shutdown_timeout=5.0))
        except actors.ActorNotRunning as error:
            outcome.append(error)

    async with trio.open_nursery() as nursery:
        async with open_system(Supervisor.spec("root", [SESSIONS])) as system:
            nursery.start_soon(start_slow_child, system.registry.lookup_supervisor("sessions"))
            await trio.sleep(1)
            assert system.registry.snapshot()["root"]["children"][0]["children"][0]["state"] == "starting"
    # Finished starting in time: stopped gracefully; otherwise cancelled at 1 + 5 s.
    assert trio.current_time() == ends_at
    assert log.of("stop") == ([("stop", "slow", 1)] if stopped else [])
    assert len(outcome) == 1


async def test_lookup_supervisor_errors(autojump_clock, probe: ProbeSpec):
    async with open_system(Supervisor.spec("root", [probe("a")])) as system:
        with pytest.raises(TypeError):
            system.registry.lookup_supervisor("a")
        with pytest.raises(actors.ActorNotFound):
            system.registry.lookup_supervisor("nobody")
        assert isinstance(system.registry.lookup_supervisor("root"), Supervisor)
