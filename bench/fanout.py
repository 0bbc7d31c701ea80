"""WebSocket fan-out benchmark: the real daemon against a bare quart-trio baseline.

Starts perpstream with a bench config (simulated feed, no demo traders,
prices at 1 Hz per market), connects N WebSocket clients to the price
streams from a Node load generator in separate processes, and records per
message the tick→client latency (arrival − the message's ``ts``), delivered
messages/s, ``seq`` gaps, and the daemon's RSS and CPU. In the same run a
bare quart-trio + hypercorn broadcast server (bench/baseline_server.py)
sends the same message to the same N clients, and a bare Node ``ws``
broadcaster shows the load generator keeps up. Figures are reported as
perpstream ÷ baseline.

Scenarios: ``a`` capacity at each ``--clients`` size; ``b`` isolation (one
client in ten stops reading); ``c`` latency at low load; ``d`` a MarketActor
restart through /debug during ``a``.

``--cluster`` compares, at each size, the single process with a cluster of
Redis, one core and two edges (``serve --role core`` / ``--role edge``),
the clients split over the edges: the same figures per process, each as
cluster ÷ single, the bus hop at the smallest size, and ``b`` with the
stalled clients on one edge (bench/fanout/cluster.py). No baselines run.

    .venv/bin/python bench/fanout.py --clients 1000,5000,10000 --duration 30 \\
        --scenarios a,b,c,d --out bench/results/fanout.json
    .venv/bin/python bench/fanout.py --quick
    .venv/bin/python bench/fanout.py --cluster --clients 1000,10000,20000 --scenarios a,b \
        --out bench/results/fanout-cluster.json
    .venv/bin/python bench/fanout.py --clients 2000 --scenarios a --profile   # py-spy the daemon

Needs Node.js >= 18 (``npm ci`` in bench/loadgen runs on first use) and, for
``--profile``, py-spy in the virtualenv; ``--cluster``, redis-server on the PATH. Every process it starts is stopped
on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import profiling  # noqa: E402
from fanout.cluster_report import cluster_summary, render_cluster  # noqa: E402
from fanout.loadgen import ensure_installed  # noqa: E402
from fanout.procs import raise_file_limit  # noqa: E402
from fanout.report import ratios, render, targets  # noqa: E402
from fanout.scenarios import Plan, Runner  # noqa: E402
from fanout.servers import ROOT, DaemonSettings  # noqa: E402

QUICK = {"clients": "200,1000", "duration": 10.0, "low_load_clients": 50, "cut_wait": 50.0}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", help="client counts of scenarios a/b/d (default: 1000,5000,10000; "
                                           "with --cluster 1000,10000,20000)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per measurement window")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds between connecting and measuring")
    parser.add_argument("--scenarios", default="a,b,c,d", help="any of a,b,c,d")
    parser.add_argument("--quick", action="store_true", help="200 and 1000 clients, 10 s windows: a sanity check")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fanout.json")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "bench.toml")
    parser.add_argument("--markets", type=int, help="markets to serve and spread clients over (default: config's)")
    parser.add_argument("--tick-ms", type=int, help="simulated feed tick interval (default: config's)")
    parser.add_argument("--prices-interval-ms", type=int, help="price publish interval (default: config's)")
    parser.add_argument("--send-timeout", type=float, help="override ws.send_timeout_s")
    parser.add_argument("--low-load-clients", type=int, default=100, help="clients of scenario c")
    parser.add_argument("--restart-clients", type=int, help="the a-size at which d runs (default: largest)")
    parser.add_argument("--stall-fraction", type=float, default=0.1, help="clients that stop reading in b")
    parser.add_argument("--cut-wait", type=float,
                        help="max seconds to wait for stalled clients to be cut (default: the daemon's "
                             "send or idle timeout + 10)")
    parser.add_argument("--connect-limit", type=float, default=300.0,
                        help="max seconds to connect a phase's clients; a server still accepting then "
                             "is measured with those connected (also given up after 60 s without progress)")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=64, help="handshakes in flight per worker")
    parser.add_argument("--no-deflate", dest="deflate", action="store_false",
                        help="do not offer permessage-deflate (browsers and Node's ws do, by default)")
    parser.add_argument("--ceiling-hz", type=float, default=10.0,
                        help="rate of the Node-reference ceiling phase at the largest size (0: skip)")
    parser.add_argument("--profile", action="store_true", help="py-spy the daemon during a's window")
    parser.add_argument("--cluster", action="store_true",
                        help="the single process against Redis + one core + two edges, at each size")
    parser.add_argument("--edges", type=int, default=2,
                        help="edges of --cluster (1: the bus hop alone, without splitting the clients)")
    parser.add_argument("--profile-clients", type=int, help="the a-size to profile at (default: largest)")
    return parser


def _plan(args: argparse.Namespace) -> tuple[Plan, DaemonSettings]:
    if args.quick:
        args.clients = QUICK["clients"]
        args.duration = QUICK["duration"]
        args.low_load_clients = QUICK["low_load_clients"]
        args.cut_wait = args.cut_wait if args.cut_wait is not None else QUICK["cut_wait"]
    if args.clients is None:
        args.clients = "1000,10000,20000" if args.cluster else "1000,5000,10000"
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    scenarios = frozenset(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = scenarios - {"a", "b", "c", "d"}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    daemon = DaemonSettings(args.config, markets=args.markets, tick_ms=args.tick_ms,
                            prices_interval_ms=args.prices_interval_ms, send_timeout_s=args.send_timeout)
    prices_interval_ms = daemon.load().get("streams", {}).get("prices_interval_ms", 1000)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = args.out.resolve().parent
    plan = Plan(
        clients=clients,
        duration=args.duration,
        warmup=args.warmup,
        scenarios=scenarios,
        low_load_clients=args.low_load_clients,
        restart_clients=args.restart_clients or max(clients),
        stall_every=max(1, round(1 / args.stall_fraction)),
        connect_limit_s=args.connect_limit,
        workers=args.workers,
        concurrency=args.concurrency,
        deflate=args.deflate,
        hz=1000 / prices_interval_ms,
        ceiling_hz=0.0 if args.cluster else args.ceiling_hz,  # the ceiling is the Node reference's
        cut_wait_s=args.cut_wait,
        profile_clients=(args.profile_clients or max(clients)) if args.profile else None,
        cluster=args.cluster,
        edges=max(1, args.edges),
        out_dir=out_dir,
        out_stem=args.out.stem,
        log_dir=out_dir / "logs" / stamp,
    )
    return plan, daemon


async def _run(runner: Runner) -> bool:
    """Run the plan; True if Ctrl-C or SIGTERM cut it short (its children stopped on the way out)."""
    interrupted = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()

            nursery.start_soon(on_signal)
            await runner.run()
            nursery.cancel_scope.cancel()
    return interrupted


def _code_version() -> dict[str, Any]:
    """The commit under test, and whether the daemon's sources differ from it."""
    def git(*command: str) -> str:
        result = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "daemon_sources_modified": bool(git("status", "--porcelain", "--", "perpstream", "actors"))}


def _meta(args: argparse.Namespace, plan: Plan, daemon: DaemonSettings, file_limit: int) -> dict[str, Any]:
    return {
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code": _code_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "file_limit": file_limit},
        "plan": {"clients": plan.clients, "duration_s": plan.duration, "warmup_s": plan.warmup,
                 "scenarios": sorted(plan.scenarios), "low_load_clients": plan.low_load_clients,
                 "restart_clients": plan.restart_clients, "stall_every": plan.stall_every,
                 "loadgen_workers": plan.workers, "deflate_offered": plan.deflate, "hz": plan.hz,
                 "ceiling_hz": plan.ceiling_hz, "cluster": plan.cluster,
                 "edges": plan.edges},
        "daemon_config": daemon.load(),
        "logs": str(plan.log_dir),
    }


def main() -> int:
    args = _parser().parse_args()
    plan, daemon = _plan(args)
    file_limit = raise_file_limit()
    needed = max(plan.clients + [plan.low_load_clients]) + 1000
    if file_limit < needed:
        print(f"warning: the descriptor limit ({file_limit}) is below {needed}; raise `ulimit -Hn`", file=sys.stderr)
    node = ensure_installed()
    pyspy = profiling.pyspy_available() if args.profile else None
    if args.profile and pyspy is None:
        print("warning: --profile needs py-spy (pip install py-spy); profiling skipped", file=sys.stderr)
    runner = Runner(plan, daemon, node, pyspy)
    meta = _meta(args, plan, daemon, file_limit)
    interrupted = trio.run(_run, runner)
    if interrupted:
        print("\ninterrupted: every started process was stopped; partial results follow", file=sys.stderr)
    print()
    print(render(runner.records))
    result = {"meta": {**meta, "interrupted": interrupted}, "phases": runner.records,
              "ratios": ratios(runner.records), "targets": targets(runner.records)}
    if plan.cluster:
        print()
        print(render_cluster(runner.records))
        result["cluster"] = cluster_summary(runner.records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {args.out}")
    profiles = [r for r in runner.records if "profile" in r]
    for record in profiles:
        print("\n" + profiling.render(record["profile"], f"profile of perpstream, {record['clients']} clients"))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
