"""The benchmark's phases: one server, N clients, one or more measurement windows.

For every client count the daemon runs first (its own price message becomes
the payload of the others), then the bare quart-trio baseline, then the Node
reference. Each phase starts a fresh server, so its idle RSS is its own:

1. start the server, let it settle, sample its idle RSS;
2. connect the N clients (price streams, spread over the markets), warm up;
3. window ``a`` (capacity): latency, messages/s, seq gaps, CPU, RSS;
4. ``d`` (perpstream, at the restart size only): restart the first market's
   actor through /debug and measure the next window: resyncs, silences,
   disconnects, gaps;
5. ``b`` (isolation): one client in ``stall_every`` stops reading; a window
   measures the healthy ones; then the harness waits for the server to cut
   the stalled sockets (watching its open descriptors) and the stalled
   clients resume to confirm it.

With ``Plan.cluster`` the daemon is followed, at every size, by a cluster
of Redis, one core and two edges instead of the baselines (bench/fanout/cluster.py).

Scenario ``c`` is phase 1–3 at the low-load size. Finally, the ``ceiling``
phase drives the Node reference at the largest size and a higher rate, to
show how much more the load generator can take.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from . import profiling
from .cluster import CLUSTER, run_cluster_phase
from .loadgen import LoadGen
from .sampling import Sampler, Usage
from .servers import BASELINE, NODE_REFERENCE, PERPSTREAM, DaemonSettings, Server, start_baseline, \
    start_daemon, start_node_reference
from .stats import Window

__all__ = ["Plan", "Runner"]

_SETTLE_S = 2.0
_CONNECT_STALL_S = 60.0  # no handshake completing for this long: go on with those connected
_UNSTALL_WAIT_MS = 3000


@attrs.frozen
class Plan:
    clients: list[int]
    duration: float
    warmup: float
    scenarios: frozenset[str]
    low_load_clients: int
    restart_clients: int
    stall_every: int
    connect_limit_s: float
    workers: int
    concurrency: int
    deflate: bool
    hz: float  # price messages per second per client
    ceiling_hz: float  # 0: no ceiling phase
    cut_wait_s: float | None  # None: the daemon's own timeouts decide
    profile_clients: int | None
    cluster: bool  # each size: the single process against a core and its edges (no baselines)
    edges: int
    out_dir: Path
    out_stem: str  # the JSON's name: other files of the run are named after it
    log_dir: Path


def _body_of(sample: str) -> str:
    """A received message without its per-subscription fields, as a Frame body."""
    message = json.loads(sample)
    message.pop("seq", None)
    message.pop("conflated", None)
    return json.dumps(message, separators=(",", ":"))[1:]


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "cpu_pct": round(usage.cpu_pct, 1),
        "rss_mb": round(usage.rss_end_kb / 1024, 1),
        "rss_max_mb": round(usage.rss_max_kb / 1024, 1),
        "fds": usage.fds_end,
    }


class Runner:
    def __init__(self, plan: Plan, daemon: DaemonSettings, node: str, pyspy: str | None) -> None:
        self.plan = plan
        self.daemon = daemon
        self.node = node
        self.pyspy = pyspy
        self.records: list[dict[str, Any]] = []
        self.body: str | None = None
        self.market_ids: list[str] = []

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # ------------------------------------------------------------ the run

    async def run(self) -> None:
        capacity = self.plan.scenarios & {"a", "b", "d"}
        if capacity:
            for clients in self.plan.clients:
                await self._group(clients, "a")
        if "c" in self.plan.scenarios:
            await self._group(self.plan.low_load_clients, "c")
        if self.plan.ceiling_hz > 0:
            largest = max(self.plan.clients) if capacity else self.plan.low_load_clients
            await self._phase(NODE_REFERENCE, largest, "ceiling", hz=self.plan.ceiling_hz)

    async def _group(self, clients: int, scenario: str) -> None:
        kinds = (PERPSTREAM, CLUSTER) if self.plan.cluster else (PERPSTREAM, BASELINE, NODE_REFERENCE)
        for kind in kinds:
            await self._phase(kind, clients, scenario, hz=self.plan.hz)

    async def _start(self, kind: str, label: str, hz: float) -> Server:
        log = self.plan.log_dir / f"{label}-server.log"
        if kind == PERPSTREAM:
            server = await start_daemon(self.daemon, scratch=self.plan.out_dir / "scratch" / label, log=log)
            self.market_ids = server.market_ids
            return server
        if self.body is None:
            raise RuntimeError("no message captured from perpstream to send from the reference servers")
        if kind == BASELINE:
            return await start_baseline(body=self.body, hz=hz, market_ids=self.market_ids, log=log)
        return await start_node_reference(node=self.node, body=self.body, hz=hz, market_ids=self.market_ids,
                                          log=log)

    async def _phase(self, kind: str, clients: int, scenario: str, *, hz: float) -> None:
        """One server's phase; a failure is recorded and the run goes on with the next."""
        label = f"{scenario}-{clients}-{kind}"
        try:
            if kind == CLUSTER:
                self.records.extend(await run_cluster_phase(self.plan, self.daemon, self.node, clients, scenario,
                                                            label, self.say))
            else:
                await self._run_phase(kind, clients, scenario, label, hz)
        except Exception as exc:  # noqa: BLE001 - reported in the results, the run goes on
            self.say(f"{label}: FAILED: {exc!r}")
            self.records.append({"scenario": scenario, "server": kind, "clients": clients,
                                 "error": repr(exc)[:2000]})

    async def _run_phase(self, kind: str, clients: int, scenario: str, label: str, hz: float) -> None:
        self.say(f"{label}: starting the server")
        server = await self._start(kind, label, hz)
        try:
            async with trio.open_nursery() as nursery:
                sampler = Sampler(server.pids)
                nursery.start_soon(sampler.run)
                await trio.sleep(_SETTLE_S)
                idle = sampler.now()
                self.say(f"{label}: idle RSS {idle.rss_kb / 1024:.1f} MB; connecting {clients} clients")
                loadgen = await LoadGen.start(
                    node=self.node, base=server.base, paths=server.price_paths(), clients=clients,
                    workers=self.plan.workers, concurrency=self.plan.concurrency, deflate=self.plan.deflate,
                    log_dir=self.plan.log_dir, label=label,
                )
                try:
                    ready = await loadgen.ready(stalled_after=_CONNECT_STALL_S, limit=self.plan.connect_limit_s)
                    self.say(f"{label}: {ready.connected} connected, {ready.failed} failed, "
                             f"in {ready.seconds:.1f} s" + (" (gave up on the rest: the server stopped accepting)"
                                                            if ready.gave_up else ""))
                    loadgen_sampler = Sampler(loadgen.pids)
                    nursery.start_soon(loadgen_sampler.run)
                    await trio.sleep(self.plan.warmup)
                    phase = _Phase(self, server, loadgen, sampler, loadgen_sampler, label=label, hz=hz,
                                   clients=clients, connected=ready.connected)
                    base = {"server": kind, "clients": clients, "connected": ready.connected,
                            "connect_failed": ready.failed, "connect_s": round(ready.seconds, 1),
                            "connect_gave_up": ready.gave_up,
                            "rss_idle_mb": round(idle.rss_kb / 1024, 1), "hz": hz}
                    record = await phase.capacity(
                        idle.rss_kb, profile=kind == PERPSTREAM and clients == self.plan.profile_clients)
                    self.records.append({"scenario": scenario, **base, **record})
                    if kind == PERPSTREAM and self.body is None and phase.sample is not None:
                        self.body = _body_of(phase.sample)
                    if scenario == "a" and kind == PERPSTREAM and "d" in self.plan.scenarios \
                            and clients == self.plan.restart_clients:
                        self.records.append({"scenario": "d", **base, **await phase.restart()})
                    if scenario == "a" and "b" in self.plan.scenarios:
                        self.records.append({"scenario": "b", **base, **await phase.isolation()})
                finally:
                    await loadgen.close()
                nursery.cancel_scope.cancel()
        finally:
            self.say(f"{label}: stopping the server")
            await server.stop()


class _Phase:
    """The windows of one phase, on a running server with connected clients."""

    def __init__(self, runner: Runner, server: Server, loadgen: LoadGen, sampler: Sampler,
                 loadgen_sampler: Sampler, *, label: str, hz: float, clients: int, connected: int) -> None:
        self.runner = runner
        self.plan = runner.plan
        self.server = server
        self.loadgen = loadgen
        self.sampler = sampler
        self.loadgen_sampler = loadgen_sampler
        self.label = label
        self.hz = hz
        self.clients = clients
        self.connected = connected
        self.sample: str | None = None

    async def _window(self, seconds: float) -> tuple[Window, Usage, Usage]:
        await self.loadgen.reset()
        mark, loadgen_mark = self.sampler.mark(), self.loadgen_sampler.mark()
        await trio.sleep(seconds)
        window = await self.loadgen.report()
        if window.sample is not None:
            self.sample = window.sample
        return window, self.sampler.usage_since(mark), self.loadgen_sampler.usage_since(loadgen_mark)

    def _figures(self, window: Window, usage: Usage, loadgen: Usage) -> dict[str, Any]:
        # CPU per delivered message: what the whole burst of a tick costs, divided
        # out. With every client of a tick served in one burst, the last client
        # waits about clients x this (the p99 ceiling of a single event loop).
        return {"window": window.summary(), "server_usage": _usage(usage),
                "server_cpu_us_per_msg": usage.cpu_us_per(window.messages),
                "loadgen_cpu_pct": round(loadgen.cpu_pct, 1)}

    async def capacity(self, idle_rss_kb: int, *, profile: bool) -> dict[str, Any]:
        profile_out = self.plan.out_dir / f"{self.plan.out_stem}-profile-{self.label}.raw"
        summary: dict[str, Any] | None = None
        async with trio.open_nursery() as nursery:
            if profile and self.runner.pyspy is not None:
                nursery.start_soon(profiling.record, self.runner.pyspy, self.server.pids[0],
                                   self.plan.duration, profile_out)
            window, usage, loadgen = await self._window(self.plan.duration)
        if profile and profile_out.exists():
            summary = {"raw": str(profile_out), **profiling.summarize(profile_out)}
        connected = self.connected
        expected = connected * self.hz
        self.runner.say(f"{self.label}: a: p99 {window.latency.p99} ms, {window.per_second:.0f} msg/s, "
                        f"gaps {window.seq_gaps}, CPU {usage.cpu_pct:.0f}%")
        figures = self._figures(window, usage, loadgen)
        figures["expected_per_s"] = round(expected, 1)
        figures["delivered_ratio"] = round(window.per_second / expected, 3) if expected else None
        figures["rss_per_conn_kb"] = round((usage.rss_end_kb - idle_rss_kb) / connected, 1) if connected else None
        if summary is not None:
            figures["profile"] = summary
        return figures

    async def _debug_connections(self) -> dict[str, Any] | None:
        if self.server.kind != PERPSTREAM:
            return None
        async with httpx.AsyncClient(timeout=30) as client:
            try:
                answer = await client.get(f"{self.server.http}/debug/actors")
                return answer.json().get("connections")  # type: ignore[no-any-return]
            except (httpx.HTTPError, ValueError):
                return None

    async def restart(self) -> dict[str, Any]:
        """Scenario d: restart the first market's actor mid-window."""
        market = self.server.market_ids[0]
        before = min(3.0, self.plan.duration / 4)
        await self.loadgen.reset()
        mark, loadgen_mark = self.sampler.mark(), self.loadgen_sampler.mark()
        await trio.sleep(before)
        restarted_at = time.time() * 1000
        status: int | str
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                status = (await client.post(f"{self.server.http}/debug/actors/markets/{market}/restart")).status_code
        except httpx.HTTPError as exc:
            status = repr(exc)
        await trio.sleep(max(0.0, self.plan.duration - (time.time() * 1000 - restarted_at) / 1000 - before))
        window = await self.loadgen.report()
        usage, loadgen = self.sampler.usage_since(mark), self.loadgen_sampler.usage_since(loadgen_mark)
        on_market = len(range(0, self.clients, len(self.server.market_ids)))
        figures = self._figures(window, usage, loadgen)
        figures["restart"] = {
            "market": market,
            "status": status,
            "clients_on_market": on_market,
            "resyncs": window.resyncs,
            "resync_first_ms": None if window.resync_first is None else round(window.resync_first - restarted_at),
            "resync_last_ms": None if window.resync_last is None else round(window.resync_last - restarted_at),
        }
        self.runner.say(f"{self.label}: d: restart {status}, {window.resyncs}/{on_market} resyncs, "
                        f"max silence {window.max_inter_arrival_ms:.0f} ms, "
                        f"disconnects {sum(window.closes.values())}")
        return figures

    async def isolation(self) -> dict[str, Any]:
        """Scenario b: stall some clients; measure the others; time the cut-off.

        Two clocks, both from the moment the clients stall: when the server's
        open descriptors have dropped by the stalled count (sockets cut), and,
        for perpstream, when its open connections have (handlers ended,
        buffers freed), polled once a second from /debug/actors.
        """
        guard_before = await self._debug_connections()
        await self.loadgen.reset()
        mark, loadgen_mark = self.sampler.mark(), self.loadgen_sampler.mark()
        before = self.sampler.samples[mark]
        stalled = await self.loadgen.stall(self.plan.stall_every)
        stalled_at = time.monotonic()
        connections: list[tuple[float, dict[str, Any]]] = []
        async with trio.open_nursery() as nursery:
            if guard_before is not None:
                nursery.start_soon(self._poll_connections, stalled_at, connections)
            await trio.sleep(self.plan.duration)
            window = await self.loadgen.report()
            usage, loadgen = self.sampler.usage_since(mark), self.loadgen_sampler.usage_since(loadgen_mark)
            self.runner.say(f"{self.label}: b: {stalled} stalled; healthy p99 {window.latency.p99} ms, "
                            f"{window.per_second:.0f} msg/s")
            await self._wait_for_cut(stalled_at, before.fds - stalled, guard_before, stalled, connections)
            nursery.cancel_scope.cancel()
        series = self.sampler.fds_since(mark)
        after = self.sampler.now()
        rss_max_kb = max(sample.rss_kb for sample in self.sampler.samples[mark:])
        confirmed = await self.loadgen.unstall(_UNSTALL_WAIT_MS)
        guard_after = await self._debug_connections()

        def first_fds(dropped: float) -> float | None:
            return next((round(t, 1) for t, fds in series if before.fds - fds >= dropped), None)

        ended_s = None
        if guard_before is not None:
            goal = guard_before["open"] - stalled
            ended_s = next((round(t, 1) for t, c in connections if c["open"] <= goal), None)
        figures = self._figures(window, usage, loadgen)
        figures["isolation"] = {
            "stalled": stalled,
            "first_cut_s": first_fds(max(1, stalled * 0.05)) if stalled else None,
            "all_cut_s": first_fds(stalled * 0.98) if stalled else None,
            "handlers_ended_s": ended_s,
            "waited_s": round(time.monotonic() - stalled_at, 1),
            "client_saw_cut": confirmed["cut"],
            "client_still_open": confirmed["still_open"],
            "rss_before_mb": round(before.rss_kb / 1024, 1),
            "rss_max_mb": round(rss_max_kb / 1024, 1),  # from the stall until the cut (or the wait's end)
            "rss_after_cut_mb": round(after.rss_kb / 1024, 1),
            "guard_before": guard_before,
            "guard_after": guard_after,
            "send_timeout_s": self.server.send_timeout_s,
            "idle_timeout_s": self.server.idle_timeout_s,
        }
        return figures

    async def _poll_connections(self, since: float, into: list[tuple[float, dict[str, Any]]]) -> None:
        while True:
            state = await self._debug_connections()
            if state is not None:
                into.append((time.monotonic() - since, state))
            await trio.sleep(1)

    async def _wait_for_cut(self, since: float, fds_goal: int, guard_before: dict[str, Any] | None, stalled: int,
                            connections: list[tuple[float, dict[str, Any]]]) -> None:
        """Until the stalled sockets are closed and (perpstream) their handlers ended, or the limit."""
        if guard_before is None:
            return  # no guard: nothing will cut them
        limit = self.plan.cut_wait_s
        if limit is None:
            assert self.server.send_timeout_s is not None and self.server.idle_timeout_s is not None
            limit = max(self.server.send_timeout_s, self.server.idle_timeout_s) + 10
        open_goal = guard_before["open"] - stalled
        while time.monotonic() - since < limit:
            fds = self.sampler.now().fds
            ended = bool(connections) and connections[-1][1]["open"] <= open_goal
            if fds <= fds_goal and ended:
                return
            self.runner.say(f"{self.label}: b: waiting for the stalled clients to be cut "
                            f"({max(0, fds - fds_goal)} sockets, "
                            f"{connections[-1][1]['open'] - open_goal if connections else '?'} handlers left)")
            await trio.sleep(2)
