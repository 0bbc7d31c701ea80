"""The cluster phase: Redis, one core and two edges, each a process, against the same clients.

The core runs the actor tree and publishes into Redis; the edges (two
unless ``Plan.edges`` says otherwise) serve the WebSocket clients from it,
an equal share each (a load-generator group per edge, so each edge's
clients are measured on their own). Every
process is sampled on its own, so CPU and RSS are reported per process.

Scenario ``b`` here stalls one client in ``stall_every`` on the first edge
only: what the issue asks is what slow clients on an edge cost the healthy
clients of that same edge, with the other edge as a control.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from .loadgen import LoadGen, Ready
from .redis import Redis, start_redis
from .sampling import Sampler, Usage
from .servers import DaemonSettings, Server, start_daemon
from .stats import Window, merge_reports

if TYPE_CHECKING:
    from .scenarios import Plan

__all__ = ["CLUSTER", "run_cluster_phase"]

CLUSTER = "cluster"
_SETTLE_S = 2.0
_CONNECT_STALL_S = 60.0
_LOG_PROBLEMS = (" ERROR ", " CRITICAL ", "Traceback")

T = TypeVar("T")


@attrs.define
class Cluster:
    redis: Redis
    core: Server | None = None
    edges: list[Server] = attrs.Factory(list)

    def pids(self) -> dict[str, int]:
        """Every process by name: the core, the edges, Redis."""
        named = {edge.kind: edge.process.pid for edge in self.edges}
        if self.core is not None:
            named["core"] = self.core.process.pid
        return {**named, "redis": self.redis.process.pid}

    def logs(self) -> dict[str, Path]:
        servers = ([self.core] if self.core is not None else []) + self.edges
        return {server.kind: server.log for server in servers}

    async def stop(self) -> None:
        """Edges first (their clients go), then the core, then Redis (nothing left to write)."""
        for edge in self.edges:
            await edge.stop()
        if self.core is not None:
            await self.core.stop()
        await self.redis.stop()


async def start_cluster(settings: DaemonSettings, *, edges: int, scratch: Path, log_dir: Path,
                        label: str) -> Cluster:
    """Redis, then the core (ready: prices flowing), then the edges (ready: the core's lease seen)."""
    cluster = Cluster(await start_redis(scratch=scratch / "redis", log=log_dir / f"{label}-redis.log"))
    bus = {"kind": "redis", "url": cluster.redis.url}
    try:
        cluster.core = await start_daemon(settings, scratch=scratch / "core", log=log_dir / f"{label}-core.log",
                                          role="core", bus=bus, kind="core")
        for i in range(edges):
            cluster.edges.append(await start_daemon(
                settings, scratch=scratch / f"edge{i}", log=log_dir / f"{label}-edge{i}.log",
                role="edge", bus=bus, kind=f"edge{i}"))
    except BaseException:
        await cluster.stop()
        raise
    return cluster


async def _each(items: Sequence[T], call: Callable[[T], Awaitable[Any]]) -> list[Any]:
    """``call`` on every item at once; the answers in order."""
    answers: list[Any] = [None] * len(items)

    async def one(i: int) -> None:
        answers[i] = await call(items[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(items)):
            nursery.start_soon(one, i)
    return answers


def _log_problems(log: Path) -> int:
    """Lines of a process's log that report an error (none expected in a healthy run)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if any(mark in line for mark in _LOG_PROBLEMS))


@attrs.frozen
class _Measured:
    edges: list[Window]  # each edge's clients
    total: Window
    usage: dict[str, Usage]  # by process
    loadgen: Usage


class _ClusterPhase:
    """The windows of one cluster phase, with every edge's clients connected."""

    def __init__(self, plan: Plan, cluster: Cluster, loads: list[LoadGen], samplers: dict[str, Sampler],
                 loadgen_sampler: Sampler, idle_kb: dict[str, int], connected: list[int]) -> None:
        self.plan = plan
        self.cluster = cluster
        self.loads = loads
        self.samplers = samplers
        self.loadgen_sampler = loadgen_sampler
        self.idle_kb = idle_kb
        self.connected = connected

    async def measure(self) -> _Measured:
        await _each(self.loads, lambda load: load.reset())
        marks = {name: sampler.mark() for name, sampler in self.samplers.items()}
        loadgen_mark = self.loadgen_sampler.mark()
        await trio.sleep(self.plan.duration)
        reports: list[list[dict[str, Any]]] = await _each(self.loads, lambda load: load.reports())
        return _Measured(
            edges=[merge_reports(r) for r in reports],
            total=merge_reports([r for edge in reports for r in edge]),
            usage={name: sampler.usage_since(marks[name]) for name, sampler in self.samplers.items()},
            loadgen=self.loadgen_sampler.usage_since(loadgen_mark),
        )

    def _delivered(self, window: Window, connected: int) -> float | None:
        expected = connected * self.plan.hz
        return round(window.per_second / expected, 3) if expected else None

    def _process(self, name: str, usage: Usage, messages: int, connected: int | None) -> dict[str, Any]:
        """One process's figures; an edge's per connection and per message are its own clients'."""
        figures: dict[str, Any] = {"cpu_pct": round(usage.cpu_pct, 1), "rss_mb": round(usage.rss_end_kb / 1024, 1),
                                   "cpu_us_per_msg": usage.cpu_us_per(messages)}
        if connected:
            figures["rss_per_conn_kb"] = round((usage.rss_end_kb - self.idle_kb[name]) / connected, 1)
        return figures

    def figures(self, measured: _Measured) -> dict[str, Any]:
        """The phase's figures in the shape of a single server's record, plus each process and edge."""
        usage = measured.usage
        total_connected = sum(self.connected)
        rss_end = sum(u.rss_end_kb for u in usage.values())
        cpu_pct = sum(u.cpu_pct for u in usage.values())
        messages = measured.total.messages
        cpu_us = sum(u.cpu_pct / 100 * u.seconds for u in usage.values()) * 1e6 / messages if messages else None
        processes = {name: self._process(name, u, messages, None) for name, u in usage.items()}
        for i, edge in enumerate(self.cluster.edges):
            processes[edge.kind] = self._process(edge.kind, usage[edge.kind], measured.edges[i].messages,
                                                 self.connected[i])
        return {
            "window": measured.total.summary(),
            "server_usage": {"cpu_pct": round(cpu_pct, 1), "rss_mb": round(rss_end / 1024, 1),
                             "rss_max_mb": round(sum(u.rss_max_kb for u in usage.values()) / 1024, 1),
                             "fds": sum(u.fds_end for u in usage.values())},
            "server_cpu_us_per_msg": None if cpu_us is None else round(cpu_us, 1),
            "loadgen_cpu_pct": round(measured.loadgen.cpu_pct, 1),
            "expected_per_s": round(total_connected * self.plan.hz, 1),
            "delivered_ratio": self._delivered(measured.total, total_connected),
            "rss_per_conn_kb": round((rss_end - sum(self.idle_kb.values())) / total_connected, 1)
            if total_connected else None,
            "processes": processes,
            "edges": [{"connected": c, "delivered_ratio": self._delivered(w, c), "window": w.summary()}
                      for c, w in zip(self.connected, measured.edges, strict=True)],
        }

    async def isolation(self, capacity: _Measured) -> dict[str, Any]:
        """Stall clients of the first edge; its healthy clients' p99 against its own p99 unstalled."""
        stalled = await self.loads[0].stall(self.plan.stall_every)
        measured = await self.measure()
        figures = self.figures(measured)
        before, during = capacity.edges[0].latency.p99, measured.edges[0].latency.p99
        # The other edge, if any: slow clients elsewhere should not move it either.
        control_before, control = (capacity.edges[1].latency.p99, measured.edges[1].latency.p99) \
            if len(measured.edges) > 1 else (None, None)
        # The table's row: the stalled edge's healthy clients.
        figures["window"] = measured.edges[0].summary()
        figures["delivered_ratio"] = self._delivered(measured.edges[0], self.connected[0] - stalled)
        figures["edge_isolation"] = {
            "edge": self.cluster.edges[0].kind,
            "stalled": stalled,
            "healthy_p99_ms": during,
            "unstalled_p99_ms": before,
            "p99_ratio": round(during / before, 2) if during is not None and before else None,
            "other_edge_p99_ms": control,
            "other_edge_unstalled_p99_ms": control_before,
        }
        return figures


def _share(clients: int, edge: int, edges: int) -> int:
    return clients // edges + (1 if edge < clients % edges else 0)


def _ready_figures(ready: list[Ready]) -> dict[str, Any]:
    return {"connected": sum(r.connected for r in ready), "connect_failed": sum(r.failed for r in ready),
            "connect_s": round(max(r.seconds for r in ready), 1), "connect_gave_up": any(r.gave_up for r in ready)}


async def _start_loads(plan: Plan, node: str, cluster: Cluster, clients: int, label: str) -> list[LoadGen]:
    loads: list[LoadGen] = []
    try:
        for i, edge in enumerate(cluster.edges):
            loads.append(await LoadGen.start(
                node=node, base=edge.base, paths=edge.price_paths(), clients=_share(clients, i, plan.edges),
                workers=max(1, plan.workers // plan.edges), concurrency=plan.concurrency, deflate=plan.deflate,
                log_dir=plan.log_dir, label=f"{label}-{edge.kind}"))
    except BaseException:
        await _each(loads, lambda load: load.close())
        raise
    return loads


async def run_cluster_phase(plan: Plan, daemon: DaemonSettings, node: str, clients: int, scenario: str,
                            label: str, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Start the cluster, connect the clients over its edges, measure; its records (``scenario``, ``b``)."""
    say(f"{label}: starting Redis, the core and {plan.edges} edge(s)")
    cluster = await start_cluster(daemon, edges=plan.edges, scratch=plan.out_dir / "scratch" / label, log_dir=plan.log_dir,
                                  label=label)
    records: list[dict[str, Any]] = []
    try:
        async with trio.open_nursery() as nursery:
            samplers = {name: Sampler([pid]) for name, pid in cluster.pids().items()}
            for sampler in samplers.values():
                nursery.start_soon(sampler.run)
            await trio.sleep(_SETTLE_S)
            idle_kb = {name: sampler.now().rss_kb for name, sampler in samplers.items()}
            say(f"{label}: idle RSS {sum(idle_kb.values()) / 1024:.1f} MB; connecting {clients} clients")
            loads = await _start_loads(plan, node, cluster, clients, label)
            try:
                ready: list[Ready] = await _each(loads, lambda load: load.ready(
                    stalled_after=_CONNECT_STALL_S, limit=plan.connect_limit_s))
                base = {"server": CLUSTER, "clients": clients, **_ready_figures(ready),
                        "rss_idle_mb": round(sum(idle_kb.values()) / 1024, 1), "hz": plan.hz}
                say(f"{label}: {base['connected']} connected ({', '.join(str(r.connected) for r in ready)}), "
                    f"{base['connect_failed']} failed, in {base['connect_s']} s"
                    + (" (gave up on the rest at the connect limit)" if base["connect_gave_up"] else ""))
                loadgen_sampler = Sampler([pid for load in loads for pid in load.pids])
                nursery.start_soon(loadgen_sampler.run)
                await trio.sleep(plan.warmup)
                phase = _ClusterPhase(plan, cluster, loads, samplers, loadgen_sampler, idle_kb,
                                      [r.connected for r in ready])
                capacity = await phase.measure()
                records.append({"scenario": scenario, **base, **phase.figures(capacity)})
                say(f"{label}: a: p50 {capacity.total.latency.p50} ms, p99 {capacity.total.latency.p99} ms, "
                    f"{capacity.total.per_second:.0f} msg/s, gaps {capacity.total.seq_gaps}")
                if scenario == "a" and "b" in plan.scenarios:
                    stalled = await phase.isolation(capacity)
                    records.append({"scenario": "b", **base, **stalled})
                    iso = stalled["edge_isolation"]
                    say(f"{label}: b: {iso['stalled']} stalled on {iso['edge']}; its healthy p99 "
                        f"{iso['healthy_p99_ms']} ms (unstalled {iso['unstalled_p99_ms']}), other edge "
                        f"{iso['other_edge_p99_ms']} ms")
            finally:
                await _each(loads, lambda load: load.close())
            nursery.cancel_scope.cancel()
    finally:
        say(f"{label}: stopping the cluster")
        await cluster.stop()
    problems = {name: _log_problems(log) for name, log in cluster.logs().items()}
    for record in records:
        record["log_problems"] = problems
    return records
