"""Prometheus metrics: counters updated as things happen, gauges read at scrape time.

Each daemon owns its own ``CollectorRegistry`` (not the process-global one),
so several daemons in one test process do not collide. State that actors
own (restarts, mailbox depth, feed age, indexer lag) is not copied into
gauges continuously; a collector reads it from the live tree when
``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _LiveStateCollector(Collector):
    """Gauges computed from the actor tree and the sources at scrape time."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for name, help_text, labels, value in self._read():
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(name, help_text, labels=list(labels))
            family.add_metric(list(labels.values()), value)
        yield from families.values()


class Metrics:
    """The daemon's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "perpstream_ws_connections", "Open WebSocket connections per endpoint", ["endpoint"],
            registry=self.registry,
        )
        self.messages_sent = Counter(
            "perpstream_ws_messages_sent", "Messages sent to WebSocket clients per channel", ["channel"],
            registry=self.registry,
        )
        self.conflated = Counter(
            "perpstream_ws_conflated", "Snapshot messages skipped for slow clients (conflation)",
            registry=self.registry,
        )
        self.slow_consumer_closes = Counter(
            "perpstream_ws_slow_consumer_closes", "Connections closed because an event buffer overflowed",
            registry=self.registry,
        )
        self.rejected = Counter(
            "perpstream_ws_rejected", "Connections refused after the handshake, by close code", ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "perpstream_ws_tick_to_send_seconds", "From a message's production (ts) to its send",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self._sent_by_channel: dict[str, Any] = {}

    def observe_sent(self, channel: str, ts_ms: int, now_ms: int) -> None:
        counter = self._sent_by_channel.get(channel)
        if counter is None:
            counter = self._sent_by_channel[channel] = self.messages_sent.labels(channel)
        counter.inc()
        self.latency.observe(max(0, now_ms - ts_ms) / 1000)

    def add_live_state(self, read: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
        """Register a reader of live state: yields (name, help, labels, value)."""
        self.registry.register(_LiveStateCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)
