"""Measure the risk signals of the embedded demo, as a liquidator bot and a trader see them.

    python -m tests.clients.risk_signals [SECONDS]

Runs the default embedded demo (its own data directory, a free port) for
SECONDS (600 by default) and follows, on one multiplexed connection, the
liquidations stream and the positions stream of every account that opens a
position. At the end it prints, as JSON:

- the demo liquidator's attempts and how many the contract refused;
- ``liquidation_warning`` messages per position, repeats of a severity a
  position had already been warned about, and those of them with no sign of
  the recovery that re-arms it (health ≥ 1.2 + ``risk.warning_rearm_margin``
  in a ``positions_update`` between the two; the 2 s sampling can miss a
  short recovery, so this over-counts);
- ``liquidation_event`` counts by kind and their latency from the tick that
  crossed (the event's ``ts``) to its arrival at this client, p50 and p99.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import httpx
import trio

from perpstream.config import parse_config
from tests.clients.live import connect
from tests.e2e.daemon import running_daemon


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(seconds: float) -> dict[str, Any]:
    warnings: dict[str, list[str]] = defaultdict(list)
    warned_in_episode: dict[str, set[str]] = defaultdict(set)
    unexplained_repeats = 0
    events: Counter[str] = Counter()
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as data_dir:
        config = parse_config({"server": {"data_dir": data_dir}})
        async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.http) as http:
            async with connect(daemon.ws("/api/v1/ws")) as ws:
                await ws.send_message(json.dumps({"op": "subscribe", "channel": "liquidations", "id": 0}))
                followed: set[str] = set()

                async def follow_accounts() -> None:
                    while True:
                        for row in (await http.get("/api/v1/positions", params={"limit": 1000})).json()["positions"]:
                            account = row["user_address"]
                            if account not in followed:
                                followed.add(account)
                                await ws.send_message(json.dumps(
                                    {"op": "subscribe", "channel": "positions", "user_address": account}))
                        await trio.sleep(2)

                rearm = Decimal("1.2") + config.risk.warning_rearm_margin

                async def read() -> None:
                    nonlocal unexplained_repeats
                    while True:
                        message = json.loads(await ws.get_message())
                        kind = message["type"]
                        if kind == "positions_update":
                            for position in message["positions"]:
                                health = position["health_factor"]
                                if health is not None and Decimal(health) >= rearm:
                                    warned_in_episode.pop(position["position_id"], None)
                        elif kind == "liquidation_warning":
                            position_id, severity = message["position_id"], message["severity"]
                            if severity in warned_in_episode[position_id]:
                                unexplained_repeats += 1
                            warned_in_episode[position_id].add(severity)
                            warnings[position_id].append(severity)
                        elif kind == "liquidation_event":
                            events[message["kind"]] += 1
                            if message["kind"] == "liquidatable":
                                latencies.append(time.time() * 1000 - message["ts"])

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(follow_accounts)
                    nursery.start_soon(read)
                    await trio.sleep(seconds)
                    nursery.cancel_scope.cancel()
            tree = (await http.get("/debug/actors")).json()
    liquidator = _find(tree["root"], "demo-liquidator")
    details = liquidator.get("details", {}) if liquidator else {}
    attempts = details.get("liquidated", 0) + details.get("refused", 0)
    repeats = sum(count - 1 for severities in warnings.values() for count in Counter(severities).values())
    return {
        "seconds": seconds,
        "liquidator": {"attempts": attempts, "refused": details.get("refused"),
                       "refused_pct": round(100 * details.get("refused", 0) / attempts, 2) if attempts else None,
                       "refusals": details.get("refusals", {})},
        "warnings": {"positions": len(warnings), "total": sum(map(len, warnings.values())),
                     "max_per_position": max(map(len, warnings.values()), default=0),
                     "same_severity_repeats": repeats, "repeats_without_seen_recovery": unexplained_repeats},
        "liquidation_events": dict(events),
        "tick_to_event_ms": {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99),
                             "n": len(latencies)},
    }


def _find(node: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    if node is None:
        return None
    if node.get("kind") == kind:
        return node
    for child in node.get("children") or ():
        if (found := _find(child, kind)) is not None:
            return found
    return None


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 600.0
    print(json.dumps(trio.run(measure, seconds), indent=2))


if __name__ == "__main__":
    main()
