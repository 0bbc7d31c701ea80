"""The cluster against the single process of the same run: ratios, the bus hop, the issue's targets.

The bus hop is read off the clients: every frame's ``ts`` is stamped where
the frame is made (the single process; in the cluster, the core, before
Redis), so ts→client on an edge holds the hop (core → Redis → edge) that
ts→client on the single process does not. The difference of the two at the
smallest size, where neither is loaded, is what the hop adds.
"""

from __future__ import annotations

from typing import Any

from .cluster import CLUSTER
from .servers import PERPSTREAM

__all__ = ["cluster_summary", "render_cluster"]

# Figures compared as cluster ÷ single process (> 1: the cluster costs more / is slower).
_FIGURES = {
    "p50": lambda r: r["window"]["latency_ms"]["p50"],
    "p99": lambda r: r["window"]["latency_ms"]["p99"],
    "deliv": lambda r: r.get("delivered_ratio"),
    "us/msg": lambda r: r.get("server_cpu_us_per_msg"),
    "KB/conn": lambda r: r.get("rss_per_conn_kb"),
}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def _by_size(records: list[dict[str, Any]], scenario: str, server: str) -> dict[int, dict[str, Any]]:
    return {r["clients"]: r for r in records if r["scenario"] == scenario and r["server"] == server
            and "error" not in r}


def _comparison(cluster: dict[str, Any], single: dict[str, Any]) -> dict[str, Any]:
    """One size: the cluster's figures ÷ the single process's, and each process's CPU per message ÷ it."""
    single_us = single.get("server_cpu_us_per_msg")
    return {
        "clients": cluster["clients"],
        "connected": {"cluster": cluster["connected"], "single": single["connected"]},
        "disconnects": {"cluster": cluster["window"]["disconnects"], "single": single["window"]["disconnects"]},
        **{name: _ratio(read(cluster), read(single)) for name, read in _FIGURES.items()},
        "us/msg by process": {name: _ratio(p["cpu_us_per_msg"], single_us)
                              for name, p in cluster["processes"].items()},
    }


def _hop(cluster: dict[str, Any], single: dict[str, Any]) -> dict[str, Any]:
    def diff(key: str) -> float | None:
        a, b = cluster["window"]["latency_ms"][key], single["window"]["latency_ms"][key]
        return None if a is None or b is None else round(a - b, 1)

    return {"clients": cluster["clients"], "p50_ms": diff("p50"), "p99_ms": diff("p99")}


def _check(name: str, measured: Any, limit: Any, ok: bool, where: str) -> dict[str, Any]:
    return {"target": name, "measured": measured, "limit": limit, "met": ok, "where": where}


def _targets(clusters: dict[int, dict[str, Any]], singles: dict[int, dict[str, Any]],
             stalls: dict[int, dict[str, Any]], hop: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    if hop is not None and hop["p50_ms"] is not None:
        out.append(_check("bus hop adds <= 5 ms at p50", hop["p50_ms"], 5, hop["p50_ms"] <= 5,
                          f"a, {hop['clients']} clients"))
    if clusters:
        top = clusters[max(clusters)]
        where = f"a, {top['clients']} clients" + ("" if top["clients"] >= 20_000 else " (target is for 20,000)")
        lost = top["clients"] - top["connected"] + top["window"]["disconnects"]
        out.append(_check("two edges keep every client connected (lost)", lost, 0, lost == 0, where))
        # The single process at half the cluster's size (10,000 for 20,000), or at its own size.
        single = singles.get(top["clients"] // 2) or singles.get(top["clients"])
        if single is not None:
            ratio = _ratio(top["window"]["latency_ms"]["p99"], single["window"]["latency_ms"]["p99"])
            out.append(_check("cluster p99 <= single p99 at half the clients (x)", ratio, 1.0,
                              ratio is not None and ratio <= 1.0, f"{where} vs single, {single['clients']}"))
    for clients, stalled in sorted(stalls.items()):
        ratio = stalled["edge_isolation"]["p99_ratio"]
        out.append(_check("slow clients on an edge: its healthy p99 <= 1.2x", ratio, 1.2,
                          ratio is not None and ratio <= 1.2, f"b, {clients} clients"))
    return out


def cluster_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every size both ran: the comparison; the bus hop at the smallest; the targets."""
    clusters, singles = _by_size(records, "a", CLUSTER), _by_size(records, "a", PERPSTREAM)
    both = sorted(set(clusters) & set(singles))
    hop = _hop(clusters[both[0]], singles[both[0]]) if both else None
    return {
        "vs_single": [_comparison(clusters[n], singles[n]) for n in both],
        "bus_hop": hop,
        "targets": _targets(clusters, singles, _by_size(records, "b", CLUSTER), hop),
    }


def _process_lines(records: list[dict[str, Any]]) -> list[str]:
    lines = []
    for record in records:
        if record["server"] != CLUSTER or "error" in record:
            continue
        parts = [f"{name} {p['cpu_pct']}% CPU, {p['cpu_us_per_msg']} us/msg, {p['rss_mb']} MB"
                 + (f", {p['rss_per_conn_kb']} KB/conn" if "rss_per_conn_kb" in p else "")
                 for name, p in record["processes"].items()]
        lines.append(f"  {record['scenario']} {record['clients']}: " + "; ".join(parts))
        edges = ", ".join(f"{e['connected']} conn p50 {e['window']['latency_ms']['p50']} "
                          f"p99 {e['window']['latency_ms']['p99']} deliv {e['delivered_ratio']}"
                          for e in record["edges"])
        lines.append(f"      edges: {edges}; log errors {record['log_problems']}")
    return lines


def render_cluster(records: list[dict[str, Any]]) -> str:
    summary = cluster_summary(records)
    lines = ["per process (cluster):", *_process_lines(records), "", "cluster ÷ single process:"]
    for row in summary["vs_single"]:
        figures = ", ".join(f"{name} {row[name]}" for name in _FIGURES)
        lines.append(f"  {row['clients']}: {figures}; connected {row['connected']}, "
                     f"disconnects {row['disconnects']}; us/msg by process {row['us/msg by process']}")
    hop = summary["bus_hop"]
    if hop is not None:
        lines.append(f"bus hop (edge − single ts→client, {hop['clients']} clients): p50 +{hop['p50_ms']} ms, "
                     f"p99 +{hop['p99_ms']} ms")
    lines += ["", "targets (cluster):"]
    for target in summary["targets"]:
        lines.append(f"  {target['target']:<50} {str(target['measured']):>8} (limit {target['limit']}) "
                     f"{'met' if target['met'] else 'NOT met':>8}  [{target['where']}]")
    return "\n".join(lines)
