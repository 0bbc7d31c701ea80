"""The table on stdout, perpstream ÷ baseline ratios, and the targets of issue 7."""

from __future__ import annotations

from typing import Any

__all__ = ["ratios", "render", "targets"]

_COLUMNS = [
    # header, width, how to read it from a record
    ("scen", 7, lambda r: r["scenario"]),
    ("clients", 7, lambda r: r["clients"]),
    ("server", 12, lambda r: r["server"]),
    ("conn", 6, lambda r: r["connected"]),
    ("open", 6, lambda r: r["window"]["open_healthy"]),
    ("p50", 7, lambda r: r["window"]["latency_ms"]["p50"]),
    ("p99", 7, lambda r: r["window"]["latency_ms"]["p99"]),
    ("p99.9", 7, lambda r: r["window"]["latency_ms"]["p999"]),
    ("max", 7, lambda r: r["window"]["latency_ms"]["max"]),
    ("msg/s", 8, lambda r: r["window"]["messages_per_s"]),
    ("deliv", 6, lambda r: r.get("delivered_ratio")),
    ("gaps", 5, lambda r: r["window"]["seq_gaps"]),
    ("disc", 5, lambda r: r["window"]["disconnects"]),
    ("cpu%", 6, lambda r: r["server_usage"]["cpu_pct"]),
    ("us/msg", 6, lambda r: r.get("server_cpu_us_per_msg")),
    ("rssMB", 7, lambda r: r["server_usage"]["rss_mb"]),
    ("KB/conn", 8, lambda r: r.get("rss_per_conn_kb")),
    ("lg cpu%", 7, lambda r: r["loadgen_cpu_pct"]),
]

# Figures compared as perpstream ÷ baseline (> 1: perpstream costs more / is slower).
_RATIO_FIGURES = {
    "p50": lambda r: r["window"]["latency_ms"]["p50"],
    "p99": lambda r: r["window"]["latency_ms"]["p99"],
    "p99.9": lambda r: r["window"]["latency_ms"]["p999"],
    "max": lambda r: r["window"]["latency_ms"]["max"],
    "msg/s": lambda r: r["window"]["messages_per_s"],
    "cpu%": lambda r: r["server_usage"]["cpu_pct"],
    "us/msg": lambda r: r.get("server_cpu_us_per_msg"),
    "rssMB": lambda r: r["server_usage"]["rss_mb"],
    "KB/conn": lambda r: r.get("rss_per_conn_kb"),
}


def _cell(value: Any, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")
    else:
        text = str(value)
    return text.rjust(width)


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def ratios(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """perpstream ÷ baseline for every scenario and size both ran."""
    out = []
    records = [r for r in records if "error" not in r]
    for record in records:
        if record["server"] != "perpstream":
            continue
        baseline = next((r for r in records if r["server"] == "baseline" and r["scenario"] == record["scenario"]
                         and r["clients"] == record["clients"]), None)
        if baseline is None and record["scenario"] == "d":  # no restart in the baseline: its steady state
            baseline = next((r for r in records if r["server"] == "baseline" and r["scenario"] == "a"
                             and r["clients"] == record["clients"]), None)
        if baseline is None:
            continue
        out.append({
            "scenario": record["scenario"],
            "clients": record["clients"],
            **{name: _ratio(read(record), read(baseline)) for name, read in _RATIO_FIGURES.items()},
        })
    return out


def _find(records: list[dict[str, Any]], scenario: str, server: str, clients: int | None = None) -> list[dict[str, Any]]:
    return [r for r in records if r["scenario"] == scenario and r["server"] == server and "error" not in r
            and (clients is None or r["clients"] == clients)]


def targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 7's targets, each with the measured figure and whether it is met."""
    out: list[dict[str, Any]] = []

    def check(name: str, measured: Any, limit: Any, ok: bool | None, where: str) -> None:
        out.append({"target": name, "measured": measured, "limit": limit, "met": ok, "where": where})

    capacity = _find(records, "a", "perpstream")
    if capacity:
        top = max(capacity, key=lambda r: r["clients"])
        where = f"a, {top['clients']} clients" + ("" if top["clients"] >= 10_000 else " (target is for 10,000)")
        p99 = top["window"]["latency_ms"]["p99"]
        check("p99 <= 100 ms at 1 Hz", p99, 100, p99 is not None and p99 <= 100, where)
        gaps = top["window"]["seq_gaps"]
        check("no seq gaps", gaps, 0, gaps == 0, where)
        per_conn = top.get("rss_per_conn_kb")
        check("RSS per connection <= 30 KB", per_conn, 30, per_conn is not None and per_conn <= 30, where)
    for stalled in _find(records, "b", "perpstream"):
        clients = stalled["clients"]
        where = f"b, {clients} clients"
        reference = _find(records, "a", "perpstream", clients)
        p99 = stalled["window"]["latency_ms"]["p99"]
        base = reference[0]["window"]["latency_ms"]["p99"] if reference else None
        ratio = _ratio(p99, base)
        check("healthy p99 <= 1.2x no-stall p99", ratio, 1.2, ratio is not None and ratio <= 1.2, where)
        isolation = stalled["isolation"]
        # Cut and freed: the later of the sockets closing and (perpstream) the handlers ending.
        times = [isolation["all_cut_s"], isolation["handlers_ended_s"]]
        cut = None if isolation["all_cut_s"] is None else max(t for t in times if t is not None)
        limit = isolation["send_timeout_s"]
        check("stalled clients cut within ws.send_timeout (s)", cut, limit,
              cut is not None and limit is not None and cut <= limit, where)
        grown = _ratio(isolation["rss_max_mb"], isolation["rss_before_mb"])
        check("RSS bounded while stalled (max / before <= 1.1)", grown, 1.1, grown is not None and grown <= 1.1, where)
    for low in _find(records, "c", "perpstream"):
        p99 = low["window"]["latency_ms"]["p99"]
        check("p99 <= 20 ms at low load", p99, 20, p99 is not None and p99 <= 20, f"c, {low['clients']} clients")
    return out


def _notes(record: dict[str, Any]) -> list[str]:
    notes = []
    window = record["window"]
    if "restart" in record:
        restart = record["restart"]
        notes.append(
            f"    restart of {restart['market']}: HTTP {restart['status']}; resync to {restart['resyncs']} of "
            f"{restart['clients_on_market']} clients, {restart['resync_first_ms']}..{restart['resync_last_ms']} ms "
            f"after the request; longest silence {window['max_inter_arrival_ms']:.0f} ms; "
            f"{window['late_arrivals']} late (> 2 s); disconnects {window['disconnects']}"
        )
    if "isolation" in record:
        iso = record["isolation"]
        guard = ""
        if iso["guard_before"] is not None and iso["guard_after"] is not None:
            guard = (f"; guard counted cut_slow +{iso['guard_after']['cut_slow'] - iso['guard_before']['cut_slow']}, "
                     f"cut_idle +{iso['guard_after']['cut_idle'] - iso['guard_before']['cut_idle']}")
        if iso["guard_before"] is None:
            notes.append(f"    {iso['stalled']} stalled; no guard in this server: {iso['client_still_open']} "
                         f"still open after {iso['waited_s']} s; RSS {iso['rss_before_mb']} MB before, "
                         f"max {iso['rss_max_mb']}")
            return notes
        notes.append(
            f"    {iso['stalled']} stalled: sockets closed first {iso['first_cut_s']} s, all {iso['all_cut_s']} s, "
            f"handlers ended {iso['handlers_ended_s']} s "
            f"(waited {iso['waited_s']} s; send_timeout {iso['send_timeout_s']}, idle {iso['idle_timeout_s']}); "
            f"clients saw cut {iso['client_saw_cut']}, still open {iso['client_still_open']}{guard}; "
            f"RSS {iso['rss_before_mb']} MB before, max {iso['rss_max_mb']}, {iso['rss_after_cut_mb']} after"
        )
    return notes


def _ratio_cell(row: dict[str, Any], column: str, width: int) -> str:
    if column == "scen":
        return _cell(row["scenario"], width)
    if column == "clients":
        return _cell(row["clients"], width)
    if column == "server":
        return "÷ baseline".rjust(width)
    return _cell(row.get(column), width) if column in _RATIO_FIGURES else " " * width


def render(records: list[dict[str, Any]]) -> str:
    header = " ".join(name.rjust(width) for name, width, _ in _COLUMNS)
    lines = [header, "-" * len(header)]
    ratio_rows = {(r["scenario"], r["clients"]): r for r in ratios(records)}
    for record in records:
        if "error" in record:
            lines.append(" ".join(_cell(read(record), width) for _, width, read in _COLUMNS[:3])
                         + f"  FAILED: {record['error'][:200]}")
            continue
        lines.append(" ".join(_cell(read(record), width) for _, width, read in _COLUMNS))
        lines.extend(_notes(record))
        # The ratio row follows the baseline's row (the restart's, its own: no baseline restarts).
        if record["server"] == "baseline" or record["scenario"] == "d":
            row = ratio_rows.get((record["scenario"], record["clients"]))
            if row is not None:
                lines.append(" ".join(_ratio_cell(row, name, width) for name, width, _ in _COLUMNS))
    lines.append("")
    lines.append("targets (perpstream):")
    for target in targets(records):
        verdict = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
        lines.append(f"  {target['target']:<50} {str(target['measured']):>8} (limit {target['limit']}) "
                     f"{verdict:>8}  [{target['where']}]")
    return "\n".join(lines)
