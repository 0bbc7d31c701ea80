"""Merge the load-generator workers' window reports into one set of figures.

Each worker reports a latency histogram of 1 ms buckets (bucket ``k`` holds
latencies in ``[k, k+1)`` ms) plus counters. Percentiles are read off the
merged histogram and quoted as the bucket's upper edge, so a figure is never
better than what was measured. (``ts`` is whole milliseconds, truncated, so
any latency carries up to 1 ms of that truncation too.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = ["Latency", "Window", "merge_reports"]

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@attrs.frozen
class Latency:
    """Tick→client latency of one window, in milliseconds."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None
    max: float | None

    @classmethod
    def from_histogram(cls, histogram: Mapping[int, int], total_ms: float) -> Latency:
        count = sum(histogram.values())
        if count == 0:
            return cls(0, None, None, None, None, None, None)
        buckets = sorted(histogram.items())
        edges: list[float] = []
        for percentile in PERCENTILES:
            wanted = count * percentile / 100
            seen = 0
            for bucket, n in buckets:
                seen += n
                if seen >= wanted:
                    edges.append(float(bucket + 1))
                    break
        p50, p90, p99, p999 = edges
        return cls(count, total_ms / count, p50, p90, p99, p999, float(buckets[-1][0] + 1))


@attrs.frozen
class Window:
    """What every client of a phase saw during one measurement window."""

    seconds: float
    messages: int  # measured messages (price_update) delivered to healthy clients
    latency: Latency
    seq_gaps: int
    seq_gap_events: int
    seq_backwards: int
    offset_backwards: int  # stream frames at or below the offset before them (repeats)
    conflated: int
    max_inter_arrival_ms: float
    late_arrivals: int
    resyncs: int
    resync_first: float | None  # epoch ms
    resync_last: float | None
    closes: dict[str, int]
    errors: int
    pings: int
    other: dict[str, int]
    open: int
    stalled_open: int
    sample: str | None

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "messages": self.messages,
            "messages_per_s": round(self.per_second, 1),
            "latency_ms": attrs.asdict(self.latency),
            "seq_gaps": self.seq_gaps,
            "seq_gap_events": self.seq_gap_events,
            "seq_backwards": self.seq_backwards,
            "offset_backwards": self.offset_backwards,
            "conflated": self.conflated,
            "max_inter_arrival_ms": round(self.max_inter_arrival_ms, 1),
            "late_arrivals": self.late_arrivals,
            "resyncs": self.resyncs,
            "disconnects": sum(self.closes.values()),
            "close_codes": self.closes,
            "errors": self.errors,
            "pings": self.pings,
            "other_messages": self.other,
            "open_healthy": self.open,
            "open_stalled": self.stalled_open,
        }


def _min(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def merge_reports(reports: list[dict[str, Any]]) -> Window:
    """One window from every worker's ``report`` event."""
    histogram: Counter[int] = Counter()
    closes: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for report in reports:
        histogram.update({int(k): v for k, v in report["histogram"].items()})
        closes.update(report["closes"])
        other.update(report["other"])
    return Window(
        seconds=max(r["window_ms"] for r in reports) / 1000,
        messages=sum(r["measured"] for r in reports),
        latency=Latency.from_histogram(histogram, sum(r["latency_sum_ms"] for r in reports)),
        seq_gaps=sum(r["seq_gaps"] for r in reports),
        seq_gap_events=sum(r["seq_gap_events"] for r in reports),
        seq_backwards=sum(r["seq_backwards"] for r in reports),
        offset_backwards=sum(r["offset_backwards"] for r in reports),
        conflated=sum(r["conflated"] for r in reports),
        max_inter_arrival_ms=max(r["max_inter_arrival_ms"] for r in reports),
        late_arrivals=sum(r["late_arrivals"] for r in reports),
        resyncs=sum(r["resyncs"] for r in reports),
        resync_first=_min(r["resync_first"] for r in reports),
        resync_last=_max(r["resync_last"] for r in reports),
        closes=dict(closes),
        errors=sum(r["errors"] for r in reports),
        pings=sum(r["pings"] for r in reports),
        other=dict(other),
        open=sum(r["open"] for r in reports),
        stalled_open=sum(r["stalled_open"] for r in reports),
        sample=next((r["sample"] for r in reports if r["sample"]), None),
    )
