"""Registry.snapshot(): the tree and the topics as plain JSON-ready data."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

import actors
from actors import ChildSpec, Intensity, Strategy, Supervisor, open_system

if TYPE_CHECKING:
    from conftest import ProbeSpec

NODE_KEYS = {
    "name", "kind", "state", "restart", "incarnation", "restarts", "last_failure",
    "mailbox", "messages_in", "messages_out", "topics", "details",
}  # fmt: skip
SUPERVISOR_KEYS = NODE_KEYS | {"strategy", "intensity", "children"}


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node] + [n for child in node.get("children", []) for n in nodes(child)]


def by_name(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["name"]: node for node in nodes(snapshot["root"])}


async def test_snapshot_is_json_ready_and_complete(autojump_clock, probe: ProbeSpec):
    inner = Supervisor.spec(
        "inner", [probe("b")], strategy=Strategy.ONE_FOR_ALL, intensity=Intensity(max_restarts=3, within=5.0)
    )
    root = Supervisor.spec("root", [probe("a"), inner])
    async with open_system(root) as system:
        registry = system.registry
        prices = registry.topic("prices")
        subscription = prices.subscribe()
        prices.publish({"price": "1.0"})
        registry.ref("a").send_nowait(("sleep", 10.0))
        await trio.testing.wait_all_tasks_blocked()
        for i in range(3):
            registry.ref("a").send_nowait(i)
        registry.ref("b").send_nowait("boom")
        failed_at = trio.current_time()
        await trio.sleep(1)

        snapshot = registry.snapshot()
        assert json.loads(json.dumps(snapshot, allow_nan=False)) == snapshot
        assert snapshot["time"] == trio.current_time()
        assert isinstance(snapshot["wall_time"], float)
        assert snapshot["topics"] == [
            {"name": "prices", "policy": "conflate", "capacity": 1, "subscribers": 1, "published": 1}
        ]
        tree = by_name(snapshot)
        assert set(tree) == {"root", "a", "inner", "b"}
        for name in ("root", "inner"):
            assert set(tree[name]) == SUPERVISOR_KEYS
        for name in ("a", "b"):
            assert set(tree[name]) == NODE_KEYS
        assert tree["root"]["strategy"] == "one_for_one"
        assert tree["inner"]["strategy"] == "one_for_all"
        assert tree["inner"]["intensity"] == {"max_restarts": 3, "within": 5.0}
        a = tree["a"]
        assert (a["kind"], a["state"], a["restart"]) == ("Probe", "running", "permanent")
        assert a["mailbox"] == {"used": 3, "capacity": 8}
        assert a["messages_in"] == 4
        assert a["details"] == {"handled": 0}
        b = tree["b"]
        assert (b["incarnation"], b["restarts"]) == (2, 1)
        assert b["last_failure"]["type"] == "ValueError"
        assert b["last_failure"]["message"] == "b boom"
        assert b["last_failure"]["at"] == failed_at
        subscription.close()


async def test_transitional_states_are_visible(autojump_clock, probe: ProbeSpec):
    children = [probe("a", stop_delay=2.0), probe("b")]
    root = Supervisor.spec("root", children, strategy=Strategy.ONE_FOR_ALL)
    async with open_system(root) as system:
        system.registry.ref("b").send_nowait("boom")
        await trio.sleep(1)  # a is taking 2 s to stop
        tree = by_name(system.registry.snapshot())
        assert (tree["a"]["state"], tree["b"]["state"]) == ("stopping", "failed")
        await trio.sleep(1.05)  # stopped; both wait out b's backoff
        tree = by_name(system.registry.snapshot())
        assert (tree["a"]["state"], tree["b"]["state"]) == ("backing_off", "backing_off")
        assert 0 < tree["b"]["restart_in"] <= 0.12


async def test_a_broken_describe_does_not_break_the_snapshot(autojump_clock):
    class Broken(actors.Actor):
        def describe(self) -> dict[str, object]:
            raise RuntimeError("oops")

    async with open_system(Supervisor.spec("root", [ChildSpec("x", Broken)])) as system:
        details = system.registry.snapshot()["root"]["children"][0]["details"]
        assert details == {"describe_error": "RuntimeError: oops"}


async def test_snapshot_without_a_running_system():
    assert actors.Registry().snapshot()["root"] is None
