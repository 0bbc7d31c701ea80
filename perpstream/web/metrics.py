"""Prometheus metrics: counters updated as things happen, the rest read at scrape time.

Each daemon owns its own ``CollectorRegistry`` (not the process-global one),
so several daemons in one test process do not collide. Every label is
bounded by the configuration or by the code, never by what clients do: no
account, address or peer ever becomes a label (the endpoint is public by
default, and a label per watched account would both grow without bound and
tell anyone which accounts are watched). Counts that only grow are
counters (exposed with ``_total``); state that actors own (restarts,
mailbox depth, feed age, indexer lag) is read from the live tree when
``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["LiveRow", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# (name, help, kind "gauge" or "counter", labels, value); a counter's name has no "_total".
LiveRow = tuple[str, str, str, dict[str, str], float]


class _LiveStateCollector(Collector):
    """Families computed at scrape time from whatever ``read`` yields."""

    def __init__(self, read: Callable[[], Iterable[LiveRow]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, help_text, kind, labels, value in self._read():
            family = families.get(name)
            if family is None:
                family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                family = families[name] = family_type(name, help_text, labels=list(labels))
            family.add_metric(list(labels.values()), value)
        yield from families.values()


class Metrics:
    """The daemon's metrics."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.connections = Gauge(
            "perpstream_ws_connections", "Open WebSocket connections per endpoint", ["endpoint"], registry=registry)
        self.subscriptions = Gauge(
            "perpstream_ws_subscriptions", "Open stream subscriptions per channel", ["channel"], registry=registry)
        self.closes = Counter(
            "perpstream_ws_closes", "WebSocket connections ended, by close code (peer: the client or network)",
            ["code"], registry=registry)
        self.messages_sent = Counter(
            "perpstream_ws_messages_sent", "Messages sent to WebSocket clients per channel", ["channel"],
            registry=registry)
        self.bytes_sent = Counter(
            "perpstream_ws_bytes_sent", "Payload bytes sent to WebSocket clients per channel", ["channel"],
            registry=registry)
        self.conflated = Counter(
            "perpstream_ws_conflated", "Snapshot messages skipped for slow clients (conflation)", registry=registry)
        self.malformed = Counter(
            "perpstream_ws_malformed_frames", "Client frames that were not a valid message (malformed input)",
            registry=registry)
        self.slow_consumer_closes = Counter(
            "perpstream_ws_slow_consumer_closes", "Connections closed because an event buffer overflowed",
            registry=registry)
        self.rejected = Counter(
            "perpstream_ws_rejected", "Connections refused after the handshake, by close code", ["code"],
            registry=registry)
        self.limit_refusals = Counter(
            "perpstream_ws_limit_refusals", "Requests and handshakes refused by an abuse limit, by error code",
            ["code"], registry=registry)
        self.latency = Histogram(
            "perpstream_ws_publish_to_socket_seconds",
            "From a message's production (its ts) to its write to the client's socket", ["channel"],
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.http_latency = Histogram(
            "perpstream_http_request_seconds", "HTTP request latency by route template, method and status class",
            ["route", "method", "status"], buckets=_LATENCY_BUCKETS, registry=registry)
        self._by_channel: dict[str, tuple[Any, Any, Any]] = {}

    def _children(self, channel: str) -> tuple[Any, Any, Any]:
        """The channel's (messages, bytes, latency) children, cached: labels() is slow for the hot path."""
        children = self._by_channel.get(channel)
        if children is None:
            children = self._by_channel[channel] = (
                self.messages_sent.labels(channel), self.bytes_sent.labels(channel), self.latency.labels(channel))
        return children

    def observe_sent(self, channel: str, size: int, ts_ms: int, now_ms: int) -> None:
        """One published message of ``size`` bytes written on ``channel``, timed from its ``ts``."""
        messages, sent_bytes, latency = self._children(channel)
        messages.inc()
        sent_bytes.inc(size)
        latency.observe(max(0, now_ms - ts_ms) / 1000)

    def count_sent(self, channel: str, size: int) -> None:
        """A reply or a first frame (``connected``, the current snapshot): counted, not timed."""
        messages, sent_bytes, _ = self._children(channel)
        messages.inc()
        sent_bytes.inc(size)

    def add_live_state(self, read: Callable[[], Iterable[LiveRow]]) -> None:
        """Register a reader of live state, called at every scrape."""
        self.registry.register(_LiveStateCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)
