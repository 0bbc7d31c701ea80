"""Resume storm: clients come back at once after a network blip, next to the ones that stayed.

    .venv/bin/python bench/resume_storm.py                  # 10,000 clients; 1,000 away for 10 s
    .venv/bin/python bench/resume_storm.py --clients 400 --storm 100 --gap-s 3 --window-s 3

The real daemon (``python -m perpstream serve``, ``config/bench.toml`` with
the embedded demo's markets and traders, trading every ``--trade-interval-ms``)
and a Node load generator (``bench/loadgen``) on loopback sockets, in one run:

1. ``--clients`` connect; the ``--storm`` stormers to the streams that have
   events to replay (liquidations, and the positions of the demo accounts
   seen trading), the stayers to those and the price streams.
2. **baseline**: a ``--window-s`` window of the stayers' latency (server
   ``ts`` → arrival, every stream frame) with everyone connected.
3. **gap**: the stormers reset their sockets (RST, no close frame) and stay
   away ``--gap-s`` seconds, keeping the epoch and offset of their last frame;
   the stayers are measured meanwhile.
4. **resume**: the stormers reconnect all at once with ``?epoch=E&offset=N``;
   the stayers are measured from that moment until every stormer is live
   again (or as long as the baseline, if that is longer).
   Each stormer notes when its socket opened, its ``connected`` (and
   ``recovered``), its last catch-up frame (one published before its
   ``connected``: the replayed events, the snapshot) and its first live frame.
5. **plain**: 3 and 4 again, reconnecting without ``since`` (fresh
   subscriptions: ``connected`` and the snapshot), the same clients and
   streams: what a resume costs beyond a reconnect (``--plain-first`` runs
   this round before the resume's, to tell the order's effect from the
   resume's).
6. **check**: one stayer per stream and load-generator worker recorded every
   event it saw; each recovered stormer's events since its offset must be
   exactly the witness's over the same offsets (none missing, none extra,
   none twice), and a stormer whose stream held no more events since its
   offset than ``history_size`` must have recovered.

Figures: the stayers' p50/p99 in each window as ratios to the baseline's
(the machine is shared: absolute figures move from run to run), the time
until all stormers are connected, caught up and live, resume ÷ plain
reconnect, how many recovered, and how many events each replayed. The first
live frame waits for the stream's next message, so it is bounded by the
stream's interval (``positions_interval_ms``, ``liquidations_interval_ms``),
not by the server.

``--profile`` samples the daemon with py-spy in the baseline window and for
``--profile-s`` seconds from the resume on, and prints where its time went.

Needs Node.js >= 18 (``npm ci`` in bench/loadgen on first use). Logs go to
``bench/results/logs/<time>/``, every figure to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import profiling  # noqa: E402
from fanout.loadgen import LoadGen, ensure_installed  # noqa: E402
from fanout.procs import raise_file_limit  # noqa: E402
from fanout.sampling import Sampler, Usage  # noqa: E402
from fanout.servers import ROOT, DaemonSettings, Server, start_daemon  # noqa: E402
from fanout.stats import Window  # noqa: E402
from perpstream.protocol import Message  # noqa: E402

_CONNECT_STALL_S = 60.0
_CONNECT_LIMIT_S = 300.0
_ACCOUNTS_WAIT_S = 90.0
_RESUME_TIMEOUT_S = 60.0


@attrs.frozen
class Plan:
    clients: int
    storm: int
    gap_s: float
    window_s: float
    warmup_s: float
    workers: int
    plain_first: bool  # the plain reconnect before the resume: does the order matter?
    profile_s: float | None  # py-spy the daemon in the baseline and for this long from the resume on
    log_dir: Path


# ---------------------------------------------------------------- setting up


def _settings(args: argparse.Namespace) -> DaemonSettings:
    """The bench config with the demo's markets (up to 150x) and traders, prices as volatile as asked.

    At the demo's own volatility a position moves too little in a few seconds to cross its
    liquidation line; a few hundred percent a year makes the liquidations stream's events happen
    within the gap.
    """
    with open(ROOT / "config" / "default.toml", "rb") as f:
        markets = tomllib.load(f)["markets"]
    for market in markets:
        market["simulated"] = {**market["simulated"], "annual_volatility": args.volatility}
    demo = {"enabled": True, "accounts": args.accounts, "trade_interval_ms": args.trade_interval_ms}
    overrides: dict[str, Any] = {"chain": {"demo": demo}, "markets": markets}
    if args.history_size is not None:
        overrides["streams"] = {"history_size": args.history_size}
    return DaemonSettings(args.config, overrides=overrides)


def _snapshot_types() -> list[str]:
    """The message types a stream conflates; its other frames are events, each kept for resumes."""
    found, pending = set(), list(Message.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.snapshot:
            found.add(cls.type)
    return sorted(found)


async def _demo_accounts(server: Server, wanted: int) -> list[str]:
    """The demo accounts seen with open positions, once all ``wanted`` are (or at the time limit)."""
    seen: set[str] = set()
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.move_on_after(_ACCOUNTS_WAIT_S):
            while len(seen) < wanted:
                page = (await client.get(f"{server.http}/api/v1/positions", params={"limit": 1000})).json()
                seen.update(p["user_address"] for p in page["positions"])
                await trio.sleep(0.5)
    if not seen:
        raise RuntimeError(f"no demo account traded within {_ACCOUNTS_WAIT_S:.0f} s")
    return sorted(seen)


@asynccontextmanager
async def _daemon(settings: DaemonSettings, log_dir: Path) -> AsyncIterator[Server]:
    """The daemon in a scratch directory of its own: a fresh chain index and stream history each run."""
    with tempfile.TemporaryDirectory(prefix="resume-storm-") as scratch:
        _say("starting the daemon")
        server = await start_daemon(settings, scratch=Path(scratch), log=log_dir / "daemon.log")
        try:
            yield server
        finally:
            await server.stop()


@asynccontextmanager
async def _clients(plan: Plan, node: str, server: Server, *, paths: list[str], count: int, workers: int,
                   label: str, witness: bool) -> AsyncIterator[LoadGen]:
    """``count`` clients over ``paths``, every one connected (a storm of fewer is not the one asked for)."""
    options = {"measureType": "*", "snapshotTypes": _snapshot_types(), "witness": witness}
    loadgen = await LoadGen.start(node=node, base=server.base, paths=paths, clients=count, workers=workers,
                                  concurrency=64, deflate=False, log_dir=plan.log_dir, label=label,
                                  options=options)
    try:
        ready = await loadgen.ready(stalled_after=_CONNECT_STALL_S, limit=_CONNECT_LIMIT_S)
        _say(f"{label}: {ready.connected} connected, {ready.failed} failed, in {ready.seconds:.1f} s")
        if ready.connected < count:
            raise RuntimeError(f"only {ready.connected} of {count} {label} connected")
        yield loadgen
    finally:
        await loadgen.close()


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---------------------------------------------------------------- the run


@attrs.define
class Round:
    """One storm: the stormers drop, stay away, and come back all at once."""

    gap: tuple[Window, Usage]
    back: tuple[Window, Usage]  # the stayers' window from the reconnect on
    dropped: int
    resumed: dict[str, int]
    stormers: list[dict[str, Any]]  # each one's timeline
    stormers_window: Window  # what the stormers saw from the reconnect on
    at: dict[str, float]  # time.monotonic() of the drop and of the reconnect


@attrs.frozen
class Profiler:
    """py-spy on the daemon for stretches of the run (``--profile``); does nothing without py-spy."""

    pyspy: str | None
    pid: int
    out_dir: Path

    def start(self, nursery: trio.Nursery, name: str, seconds: float) -> None:
        if self.pyspy is not None:
            nursery.start_soon(profiling.record, self.pyspy, self.pid, seconds, self.out_dir / f"profile-{name}.raw")

    def summaries(self) -> dict[str, dict[str, Any]]:
        return {path.stem.removeprefix("profile-"): {"raw": str(path), **profiling.summarize(path)}
                for path in sorted(self.out_dir.glob("profile-*.raw"))}


async def _window(stayers: LoadGen, sampler: Sampler, seconds: float) -> tuple[Window, Usage]:
    await stayers.reset()
    mark = sampler.mark()
    await trio.sleep(seconds)
    return await stayers.report(), sampler.usage_since(mark)


async def _round(plan: Plan, stayers: LoadGen, stormers: LoadGen, sampler: Sampler, profiler: Profiler, *,
                 since: bool) -> Round:
    """Drop, the gap, the reconnect (with ``since`` or plainly) and the stayers' window until all are back."""
    name = "resume" if since else "plain reconnect"
    at = {"drop": time.monotonic()}
    dropped = await stormers.drop()
    _say(f"{name}: {dropped} stormers reset their sockets; away for {plan.gap_s:g} s")
    gap = await _window(stayers, sampler, plan.gap_s)
    await stormers.reset()
    await stayers.reset()
    mark = sampler.mark()
    at["reconnect"] = time.monotonic()
    resumed: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        async def resume() -> None:
            resumed.update(await stormers.resume(_RESUME_TIMEOUT_S, since=since))
            _say(f"{name}: {resumed['live']} of {resumed['clients']} live again")

        nursery.start_soon(resume)
        if since and plan.profile_s:
            profiler.start(nursery, "resume", plan.profile_s)
        await trio.sleep(plan.window_s)
    # The window lasts until every stormer is live again, or the baseline's length if that is longer.
    back = await stayers.report(), sampler.usage_since(mark)
    return Round(gap, back, dropped, resumed, await stormers.resume_report(), await stormers.report(), at)


async def _storm(plan: Plan, stayers: LoadGen, stormers: LoadGen, sampler: Sampler,
                 profiler: Profiler) -> tuple[tuple[Window, Usage], Round, Round, list[dict[str, Any]]]:
    """The baseline window, a storm of resumes, one of plain reconnects, and what the witnesses saw."""
    async with trio.open_nursery() as nursery:
        if plan.profile_s:
            profiler.start(nursery, "baseline", plan.window_s)
        baseline = await _window(stayers, sampler, plan.window_s)
    _say(f"baseline: stayers' p99 {baseline[0].latency.p99} ms")
    rounds: dict[bool, Round] = {}
    for since in (False, True) if plan.plain_first else (True, False):
        rounds[since] = await _round(plan, stayers, stormers, sampler, profiler, since=since)
    return baseline, rounds[True], rounds[False], await stayers.witness()


async def run(plan: Plan, settings: DaemonSettings, node: str, accounts: int, pyspy: str | None) -> dict[str, Any]:
    async with _daemon(settings, plan.log_dir) as server:
        found = await _demo_accounts(server, accounts)
        _say(f"{len(found)} demo accounts trading; connecting {plan.clients} clients")
        storm_paths = ["/api/v1/ws/liquidations"] + [f"/api/v1/ws/positions/{a}" for a in found]
        stay_paths = server.price_paths() + storm_paths
        profiler = Profiler(pyspy, server.process.pid, plan.log_dir)
        async with trio.open_nursery() as nursery:
            sampler = Sampler(server.pids)
            nursery.start_soon(sampler.run)
            async with _clients(plan, node, server, paths=stay_paths, count=plan.clients - plan.storm,
                                workers=plan.workers, label="stayers", witness=True) as stayers, \
                    _clients(plan, node, server, paths=storm_paths, count=plan.storm, workers=1,
                             label="stormers", witness=False) as stormers:
                await trio.sleep(plan.warmup_s)
                baseline, resumed, plain, witnesses = await _storm(plan, stayers, stormers, sampler, profiler)
            nursery.cancel_scope.cancel()
    history_size = int(settings.load().get("streams", {}).get("history_size", 100))
    paths = {"storm_paths": storm_paths, "stay_paths": stay_paths, "history_size": history_size}
    return {"plan": {**attrs.asdict(plan), "log_dir": str(plan.log_dir), **paths},
            **_figures(baseline, resumed, plain, witnesses, history_size), "profiles": profiler.summaries(),
            "daemon_samples": _series(sampler),
            "phases_at_s": {f"{name} {event}": round(t - sampler.samples[0].at, 1)
                            for name, round_ in (("resume", resumed), ("plain", plain)) for event, t in round_.at.items()}}


def _series(sampler: Sampler) -> list[list[float]]:
    """The daemon's open descriptors, RSS and CPU every half second: where a run went wrong, if one did.

    Accepted sockets the daemon does not serve, or does not let go of, show as descriptors.
    """
    start = sampler.samples[0]
    return [[round(s.at - start.at, 1), s.fds, round(s.rss_kb / 1024, 1), round(s.cpu_s - start.cpu_s, 2)]
            for s in sampler.samples]


# ---------------------------------------------------------------- the figures


def _percentiles(values: Sequence[float | None]) -> dict[str, float | None]:
    """p50, p99 and max (nearest rank) of the values present, and how many were absent."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return {"p50": None, "p99": None, "max": None, "missing": len(values)}

    def rank(p: float) -> float:
        return round(present[max(0, math.ceil(p / 100 * len(present)) - 1)], 1)

    return {"p50": rank(50), "p99": rank(99), "max": round(present[-1], 1), "missing": len(values) - len(present)}


def _witness_of(workers: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """One witness per path (the first worker's), and where the other witnesses disagree with it.

    Two stayers on one stream must have seen the same events over the offsets both watched.
    """
    chosen: dict[str, dict[str, Any]] = {}
    disagreements = []
    for paths in workers:
        for path, seen in paths.items():
            first = chosen.setdefault(path, seen)
            if first is seen or not first["first"] or not seen["first"]:
                continue
            low, high = max(first["first"], seen["first"]), min(first["last"], seen["last"])
            mine = {o: t for o, t in first["events"] if low <= o <= high}
            theirs = {o: t for o, t in seen["events"] if low <= o <= high}
            if mine.keys() != theirs.keys():
                disagreements.append({"path": path, "range": [low, high],
                                      "first_only": sorted(mine.items() - theirs.items()),
                                      "other_only": sorted(theirs.items() - mine.items())})
    return chosen, disagreements


def _check(client: dict[str, Any], witness: dict[str, Any], history_size: int) -> dict[str, int]:
    """A stormer's events since its offset against the witness's over the same offsets."""
    since = client["since"]["offset"]
    upto = min(client["last_offset"], witness["last"])
    expected = {o for o, _ in witness["events"] if since < o <= upto}
    received = [o for o in client["events"] if o <= upto]
    fresh = {o for o in received if o > since}
    # What the history had to hold: the events before the first live frame (or all, without one).
    live = client["live_offset"] or client["last_offset"]
    missed = sum(1 for o, _ in witness["events"] if since < o < live)
    return {
        "checked": len(expected),
        "missing": len(expected - fresh),
        "extra": len(fresh - expected),
        "repeated": len(received) - len(fresh),  # at or below its offset, or twice
        "unverifiable": int(not 0 < witness["first"] <= since),
        "should_recover": int(missed <= history_size and 0 < witness["first"] <= since),
    }


def _consistency(stormers: list[dict[str, Any]], witnesses: list[dict[str, Any]], history_size: int) -> dict[str, Any]:
    chosen, disagreements = _witness_of(witnesses)
    totals: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for client in stormers:
        check = _check(client, chosen[client["path"]], history_size)
        should_recover = check.pop("should_recover")
        totals["should_recover"] += should_recover
        if client["recovered"] is not True:
            # The server said it cannot tell what was missed: a snapshot, no replay, nothing to compare.
            totals["not_recovered_though_kept"] += should_recover
            continue
        totals.update(check)
        wrong = check["missing"] + check["extra"] + check["repeated"]
        if wrong and len(examples) < 5:
            examples.append({"path": client["path"], "since": client["since"], **check})
        if len(client["epochs"]) > 1 or client["epochs"][:1] not in ([], [client["since"]["epoch"]]):
            totals["epoch_changed"] += 1
    return {
        "mismatches": totals["missing"] + totals["extra"] + totals["repeated"],
        **{key: totals[key] for key in ("checked", "missing", "extra", "repeated", "unverifiable",
                                        "should_recover", "not_recovered_though_kept", "epoch_changed")},
        "witness_disagreements": sum(len(d["first_only"]) + len(d["other_only"]) for d in disagreements),
        "witness_examples": disagreements[:5],
        "examples": examples,
    }


def _by_stream(stormers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Replayed events per client, for the liquidations stream and for the positions streams."""
    groups: dict[str, list[int]] = {}
    for client in stormers:
        kind = "liquidations" if client["path"].endswith("/liquidations") else "positions"
        groups.setdefault(kind, []).append(client["replayed"])
    return {kind: {"clients": len(v), **_percentiles(v), "total": sum(v)} for kind, v in groups.items()}


def _stages(stormers: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """When the stormers' sockets opened, got ``connected``, caught up and went live (ms after the reconnect)."""
    return {stage: _percentiles([c[f"{stage}_ms"] for c in stormers]) for stage in ("open", "connected", "caught_up",
                                                                                     "live")}


def _reconnects(round_: Round) -> dict[str, Any]:
    stormers = round_.stormers
    after = round_.stormers_window.summary()
    return {
        "dropped": round_.dropped,
        "clients": len(stormers),
        "no_connected": sum(1 for c in stormers if c["connected_ms"] is None),
        "failed": sum(1 for c in stormers if c["failed"]),
        "handshakes_retried": sum(c["attempts"] - 1 for c in stormers),
        "closed": dict(Counter(str(c["close_code"]) for c in stormers if c["close_code"] is not None)),
        "ms": _stages(stormers),
        "catchup_frames": _percentiles([c["catchup_frames"] for c in stormers]),
        "after": {key: after[key] for key in ("offset_backwards", "seq_gaps", "seq_backwards", "disconnects")},
        # Per client, in the order of the stages above, then the events it replayed.
        "timelines": sorted(([c["open_ms"], c["connected_ms"], c["caught_up_ms"], c["live_ms"], c["replayed"]]
                             for c in stormers), key=lambda t: (t[0] is None, t[0] or 0.0)),
    }


def _resumes(round_: Round) -> dict[str, Any]:
    stormers = round_.stormers
    recovered = Counter(c["recovered"] for c in stormers)
    return {
        **_reconnects(round_),
        "recovered": recovered[True],
        "not_recovered": recovered[False],
        "replayed": {"all": {**_percentiles([c["replayed"] for c in stormers]),
                             "total": sum(c["replayed"] for c in stormers)}, **_by_stream(stormers)},
    }


def _window_figures(pair: tuple[Window, Usage]) -> dict[str, Any]:
    window, usage = pair
    return {**window.summary(), "daemon_cpu_pct": round(usage.cpu_pct, 1),
            "daemon_rss_mb": round(usage.rss_end_kb / 1024, 1)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def _figures(baseline: tuple[Window, Usage], resumed: Round, plain: Round, witnesses: list[dict[str, Any]],
             history_size: int) -> dict[str, Any]:
    windows = {"baseline": baseline, "gap": resumed.gap, "resume": resumed.back,
               "plain gap": plain.gap, "plain": plain.back}
    stayers = {name: _window_figures(pair) for name, pair in windows.items()}
    base = stayers["baseline"]["latency_ms"]
    resumes, plains = _resumes(resumed), _reconnects(plain)
    return {
        "resume": resumes,
        "plain": plains,
        "resume_vs_plain_ms": {stage: {p: _ratio(resumes["ms"][stage][p], plains["ms"][stage][p])
                                       for p in ("p50", "p99", "max")} for stage in ("connected", "caught_up")},
        "consistency": _consistency(resumed.stormers, witnesses, history_size),
        "stayers": stayers,
        "stayers_vs_baseline": {name: {p: _ratio(stayers[name]["latency_ms"][p], base[p]) for p in ("p50", "p99", "p999")}
                                for name in stayers if name != "baseline"},
    }


def _ms(figures: dict[str, float | None]) -> str:
    return "  ".join(f"{k} {'-' if figures[k] is None else format(figures[k], 'g')}" for k in ("p50", "p99", "max"))


_STAGES = {"open": "socket open", "connected": "connected", "caught_up": "caught up (last catch-up frame)",
           "live": "first live frame"}


def _render_reconnects(name: str, figures: dict[str, Any]) -> list[str]:
    after = figures["after"]
    lines = [f"{name}: {figures['clients']} of {figures['dropped']} dropped reconnected; no connected "
             f"{figures['no_connected']}, failed {figures['failed']}, handshakes retried "
             f"{figures['handshakes_retried']}, closed {figures['closed'] or 0}; afterwards "
             f"offsets repeated {after['offset_backwards']}, seq gaps {after['seq_gaps']}, "
             f"disconnects {after['disconnects']}"]
    lines += [f"  {label:<34} {_ms(figures['ms'][stage])}" for stage, label in _STAGES.items()]
    return lines


def render(result: dict[str, Any]) -> str:
    plan, resumes, check = result["plan"], result["resume"], result["consistency"]
    lines = [
        f"{plan['clients']} clients: {plan['clients'] - plan['storm']} stay, {plan['storm']} reset their sockets, "
        f"stay away {plan['gap_s']:g} s and reconnect at once, "
        + ("first plainly, then with ?epoch&offset" if plan["plain_first"] else "first with ?epoch&offset, then plainly"),
        f"  storm streams: {len(plan['storm_paths'])} (liquidations, positions of {len(plan['storm_paths']) - 1} "
        f"demo accounts); stayers also on {len(plan['stay_paths']) - len(plan['storm_paths'])} price streams; "
        f"history_size {plan['history_size']}",
        "",
        *_render_reconnects("resume", resumes),
        f"  recovered {resumes['recovered']}, not recovered {resumes['not_recovered']}; replayed events per client:",
        *(f"    {kind:<32} {_ms(figures)}  total {figures['total']}" for kind, figures in resumes["replayed"].items()),
        f"  gapless against a stayer on the same stream: {check['mismatches']} mismatches "
        f"(missing {check['missing']}, extra {check['extra']}, repeated {check['repeated']}) over "
        f"{check['checked']} events; unverifiable {check['unverifiable']}; not recovered though the history "
        f"held it {check['not_recovered_though_kept']}; epoch changed {check['epoch_changed']}; witnesses "
        f"disagree on {check['witness_disagreements']}",
        *_render_reconnects("plain reconnect (no since), the same clients", result["plain"]),
        "resume ÷ plain reconnect: " + "; ".join(
            f"{_STAGES[stage]} p50 {r['p50']}x p99 {r['p99']}x max {r['max']}x"
            for stage, r in result["resume_vs_plain_ms"].items()),
        "",
        f"stayers ({plan['clients'] - plan['storm']}), server ts -> arrival, ms:",
        f"  {'window':<10} {'s':>5} {'msg/s':>8} {'p50':>6} {'p99':>6} {'p99.9':>6} {'max':>7} "
        f"{'gaps':>5} {'disc':>5} {'cpu%':>6}",
    ]
    for name, w in result["stayers"].items():
        lat = w["latency_ms"]
        lines.append(f"  {name:<10} {w['seconds']:>5g} {w['messages_per_s']:>8g} {lat['p50']!s:>6} {lat['p99']!s:>6} "
                     f"{lat['p999']!s:>6} {lat['max']!s:>7} {w['seq_gaps']:>5} {w['disconnects']:>5} "
                     f"{w['daemon_cpu_pct']:>6g}")
    for name, ratio in result["stayers_vs_baseline"].items():
        lines.append(f"  {name + ' ÷ baseline':<20} p50 {ratio['p50']}x  p99 {ratio['p99']}x  p99.9 {ratio['p999']}x")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10_000, help="clients in all, stormers included")
    parser.add_argument("--storm", type=int, default=1_000, help="clients that drop and resume")
    parser.add_argument("--gap-s", type=float, default=10.0, help="seconds the stormers stay away")
    parser.add_argument("--window-s", type=float, default=10.0, help="the baseline and storm windows")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="between connecting and measuring")
    parser.add_argument("--accounts", type=int, default=12, help="demo accounts (one positions stream each)")
    parser.add_argument("--trade-interval-ms", type=int, default=300,
                        help="the demo's pace: events on the positions and liquidations streams")
    parser.add_argument("--volatility", default="10",
                        help="the simulated prices' annualized volatility (a decimal: 10 is 1,000 %%)")
    parser.add_argument("--history-size", type=int,
                        help="[streams] history_size (default: the config's); a small one makes resumes fail")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes of the stayers")
    parser.add_argument("--plain-first", action="store_true",
                        help="reconnect plainly first, then resume (to tell the order's effect from the resume's)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the daemon in the baseline window and from the resume on (needs py-spy)")
    parser.add_argument("--profile-s", type=float, default=20.0, help="seconds profiled from the resume on")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "bench.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "resume_storm.json")
    return parser


def main() -> int:
    args = _parser().parse_args()
    if not 0 < args.storm < args.clients:
        raise SystemExit("--storm must be between 0 and --clients")
    file_limit = raise_file_limit()
    if file_limit < args.clients + 1000:
        print(f"warning: the descriptor limit ({file_limit}) is below {args.clients + 1000}; raise `ulimit -Hn`",
              file=sys.stderr)
    out_dir = args.out.resolve().parent
    plan = Plan(clients=args.clients, storm=args.storm, gap_s=args.gap_s, window_s=args.window_s,
                warmup_s=args.warmup_s, workers=args.workers, plain_first=args.plain_first,
                profile_s=args.profile_s if args.profile else None,
                log_dir=out_dir / "logs" / time.strftime("%Y%m%d-%H%M%S"))
    pyspy = profiling.pyspy_available() if args.profile else None
    if args.profile and pyspy is None:
        print("warning: --profile needs py-spy (pip install py-spy); profiling skipped", file=sys.stderr)
    result = trio.run(run, plan, _settings(args), ensure_installed(), args.accounts, pyspy)
    result["command"] = " ".join(sys.argv)
    print()
    print(render(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {args.out}")
    for name, profile in result["profiles"].items():
        print("\n" + profiling.render(profile, f"profile of the daemon, {name}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
