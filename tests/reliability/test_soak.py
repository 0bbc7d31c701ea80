"""Soak: clients connect, leave, vanish, stall and misbehave at random while
prices move and the demo traders trade; afterwards the daemon must be back
where it started.

The daemon is a real ``perpstream serve`` process (the embedded demo), so
its resident memory and open file descriptors are its own. "Back where it
started" is measured after a warm-up round of the same churn (so what is
allocated once, lazily, is in the baseline) and once every connection has
gone and every session has passed its grace period:

- open file descriptors: the baseline's, give or take two;
- resident memory: within a margin of the baseline (the embedded chain
  keeps every block in memory, so the demo's own trading grows it a little,
  about 5 MiB a minute, clients or not);
- the actor tree: the same actors, all running, none restarted, no session
  left, every topic back to its baseline subscribers, no connection open;
- the log: nothing at error level, and warnings only of the expected kinds;
- a client reading all along kept its cadence, with no gap in ``seq``.

The default run churns for 25 s; ``--run-slow`` adds the long soak
(``--soak-minutes``, default 10).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from .churn import Churn
from .daemon_process import DaemonProcess

pytestmark = pytest.mark.e2e

SHORT_SOAK_S = 25.0
WARM_UP_S = 6.0
WORKERS = 12
# Observed: the demo alone (no clients at all) grows the embedded chain's
# memory by about 5 MiB a minute, with or without churn; a leak per client
# session (a couple of hundred per 25 s) would go well past this.
RSS_MARGIN_KIB = 12 * 1024
RSS_MARGIN_PER_MINUTE_KIB = 6 * 1024
# Warnings the churn itself provokes, or the demo's own life brings.
EXPECTED_WARNINGS = ("cannot attach positions:",)


def settings(workdir: Path) -> dict[str, Any]:
    return {
        "server": {"data_dir": str(workdir / "data")},
        "ws": {"send_timeout_s": 2.0, "ping_interval_s": 1.0},
        "sessions": {"grace_s": 0.5},
        "streams": {"prices_interval_ms": 250, "positions_interval_ms": 500, "market_stats_interval_ms": 1000,
                    "liquidations_interval_ms": 1000},
        "chain": {"demo": {"trade_interval_ms": 300}},
    }


@attrs.frozen
class Footprint:
    rss_kib: int
    fds: int
    actors: dict[str, tuple[str, int]]  # name -> (state, restarts)
    topics: dict[str, int]  # name -> subscribers
    open_connections: int

    def describe(self) -> str:
        return f"rss={self.rss_kib // 1024} MiB fds={self.fds} actors={len(self.actors)} topics={len(self.topics)}"


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("children") or () for n in _walk(child))]


async def settled_footprint(daemon: DaemonProcess) -> Footprint:
    """The footprint once every client has gone and every session has ended."""
    async with httpx.AsyncClient(base_url=daemon.http) as http:
        with trio.fail_after(30):
            while True:
                tree = (await http.get("/debug/actors")).json()
                nodes = _walk(tree["root"])
                sessions = [n for n in nodes if n["kind"] == "session"]
                if tree["connections"]["open"] == 0 and not sessions:
                    break
                await trio.sleep(0.2)
    await trio.sleep(1.5)  # let the allocator and the kernel catch up with what was freed
    return Footprint(
        rss_kib=daemon.rss_kib(),
        fds=daemon.open_fds(),
        actors={n["name"]: (n["state"], n["restarts"]) for n in nodes},
        topics={t["name"]: t["subscribers"] for t in tree["topics"]},
        open_connections=tree["connections"]["open"],
    )


async def demo_accounts(daemon: DaemonProcess, at_least: int = 3) -> list[str]:
    async with httpx.AsyncClient(base_url=daemon.http) as http:
        with trio.fail_after(30):
            while True:
                positions = (await http.get("/api/v1/positions")).json()["positions"]
                accounts = sorted({p["user_address"] for p in positions})
                if len(accounts) >= at_least:
                    return accounts
                await trio.sleep(0.3)


@attrs.define
class Observer:
    """One well-behaved client that reads a price stream for the whole soak."""

    arrivals: list[float] = attrs.Factory(list)
    seqs: list[int] = attrs.Factory(list)
    conflated: int = 0

    async def run(self, url: str, until: trio.Event) -> None:
        async with open_websocket_url(url) as ws:
            while not until.is_set():
                with trio.move_on_after(1):
                    message = json.loads(await ws.get_message())
                    self.seqs.append(message["seq"])
                    self.conflated += message.get("conflated", 0)
                    if message["type"] == "price_update":
                        self.arrivals.append(trio.current_time())


async def churn_for(daemon: DaemonProcess, accounts: list[str], seconds: float, *, seed: int,
                    observe: Callable[[trio.Event], Any] | None = None) -> Churn:
    churn = Churn(daemon.port, accounts, seed=seed)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(churn.run, WORKERS, stop)
        if observe is not None:
            nursery.start_soon(observe, stop)
        await trio.sleep(seconds)
        stop.set()
    return churn


async def soak(tmp_path: Path, seconds: float) -> None:
    daemon = DaemonProcess(tmp_path, settings(tmp_path))
    try:
        await daemon.start()
        accounts = await demo_accounts(daemon)
        await churn_for(daemon, accounts, WARM_UP_S, seed=1)
        baseline = await settled_footprint(daemon)
        logged_before = len(daemon.log_entries())

        observer = Observer()
        churn = await churn_for(daemon, accounts, seconds, seed=2,
                                observe=lambda stop: observer.run(daemon.ws("/api/v1/ws/prices/btc-usdc-perp"), stop))
        after = await settled_footprint(daemon)
        entries = daemon.log_entries()[logged_before:]
        assert await daemon.stop() == 0
    finally:
        daemon.ensure_stopped()

    print(f"\nsoak {seconds:.0f} s, {sum(churn.outcomes.values())} client sessions: {dict(churn.outcomes)}")
    print(f"baseline {baseline.describe()}\nafter    {after.describe()}")

    # Every kind of client came and went, in numbers.
    kinds = {outcome.split(":")[0] for outcome in churn.outcomes}
    assert kinds == {"reader", "multiplexer", "vanisher", "staller", "garbage"}, churn.outcomes
    failed_readers = [o for o in churn.outcomes if o.startswith("reader:") and o != "reader: left"]
    assert not failed_readers, churn.outcomes

    # Back to baseline.
    assert after.open_connections == 0
    assert after.actors == baseline.actors and all(state == "running" for state, _ in after.actors.values())
    assert not [restarts for _, restarts in after.actors.values() if restarts]
    assert after.topics == baseline.topics
    assert abs(after.fds - baseline.fds) <= 2, (baseline.fds, after.fds)
    margin = RSS_MARGIN_KIB + RSS_MARGIN_PER_MINUTE_KIB * seconds / 60
    assert after.rss_kib - baseline.rss_kib <= margin, (baseline.rss_kib, after.rss_kib)

    # Nothing went wrong that was not asked for.
    errors = [e for e in entries if e.get("level") in ("error", "critical", "raw") or "exception" in e]
    assert not errors, errors[:3]
    unexpected = [e["message"] for e in entries if e.get("level") == "warning"
                  and not any(kind in e["message"] for kind in EXPECTED_WARNINGS)]
    assert not unexpected, unexpected[:5]

    # The well-behaved client was never held up by the others.
    assert observer.seqs == list(range(1, len(observer.seqs) + 1)) and observer.conflated == 0
    gaps = [b - a for a, b in zip(observer.arrivals, observer.arrivals[1:])]
    assert len(observer.arrivals) >= seconds and max(gaps) < 1.5, max(gaps)


async def test_soak(tmp_path: Path) -> None:
    await soak(tmp_path, SHORT_SOAK_S)


@pytest.mark.slow
async def test_soak_long(tmp_path: Path, soak_minutes: float) -> None:
    await soak(tmp_path, soak_minutes * 60)
