"""What the abuse limits and the per-channel metrics cost, against what they replaced.

    python bench/abuse_limits.py [--clients 10000] [--messages 200000] [--repeats 5]

- **per connection**: one connection's whole life in the per-address table
  (connect, three subscriptions, one of them an account, their release,
  disconnect) and its token bucket, against the plain per-address
  connection counter the daemon had before (a dict increment and decrement);
  ``--clients`` distinct addresses, so the table grows and empties as under
  a crowd.
- **per message**: ``Metrics.observe_sent`` (messages, bytes and latency by
  channel) against the counter and histogram observation it replaced.

Figures are the best of ``--repeats`` runs, in nanoseconds per operation,
with the ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from perpstream.config import LimitsConfig
from perpstream.web.limits import ClientLimits, TokenBucket
from perpstream.web.metrics import Metrics

ACCOUNT = "0x" + "ab" * 20


def best_ns(run: Callable[[], int], repeats: int) -> float:
    """The fastest of ``repeats`` runs, per operation (``run`` returns how many it did)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        count = run()
        best = min(best, (time.perf_counter_ns() - start) / count)
    return best


def connections_before(addresses: list[str]) -> Callable[[], int]:
    def run() -> int:
        counts: dict[str, int] = {}
        for address in addresses:
            counts[address] = counts.get(address, 0) + 1
        for address in addresses:
            count = counts[address] - 1
            if count:
                counts[address] = count
            else:
                del counts[address]
        return len(addresses)

    return run


def connections_now(addresses: list[str]) -> Callable[[], int]:
    limits = LimitsConfig()

    def run() -> int:
        table = ClientLimits(limits, max_connections=64)
        for n, address in enumerate(addresses):
            now = n * 1e-6
            table.connect(address, now)
            bucket = TokenBucket(limits.subscribe_rate_per_s, limits.subscribe_burst, now)
            for account in (None, None, ACCOUNT):
                bucket.take(now)
                table.subscribe(address, account, now)
        for n, address in enumerate(addresses):
            now = 1.0 + n * 1e-6
            for account in (None, None, ACCOUNT):
                table.unsubscribe(address, account, now)
            table.disconnect(address, now)
        assert len(table) == 0
        return len(addresses)

    return run


def messages_before(count: int) -> Callable[[], int]:
    registry = CollectorRegistry()
    sent = Counter("sent", "", ["channel"], registry=registry)
    latency = Histogram("latency", "", registry=registry)
    children: dict[str, object] = {}

    def run() -> int:
        for n in range(count):
            counter = children.get("prices")
            if counter is None:
                counter = children["prices"] = sent.labels("prices")
            counter.inc()  # type: ignore[attr-defined]
            latency.observe(n % 7 / 1000)
        return count

    return run


def messages_now(count: int) -> Callable[[], int]:
    metrics = Metrics()

    def run() -> int:
        for n in range(count):
            metrics.observe_sent("prices", 180, 1_000, 1_000 + n % 7)
        return count

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    addresses = [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(args.clients)]
    rows = [
        ("per connection (3 subscriptions)", best_ns(connections_before(addresses), args.repeats),
         best_ns(connections_now(addresses), args.repeats)),
        ("per message sent", best_ns(messages_before(args.messages), args.repeats),
         best_ns(messages_now(args.messages), args.repeats)),
    ]
    print(f"{'':34} {'before ns':>10} {'now ns':>10} {'ratio':>7}")
    for name, before, now in rows:
        print(f"{name:34} {before:10.0f} {now:10.0f} {now / before:7.2f}")


if __name__ == "__main__":
    main()
