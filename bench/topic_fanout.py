"""Fan-out benchmark: actors.Topic against bare trio memory channels.

One publisher, N in-process subscribers: most are fast readers (one task
each, draining through its own Sink, as a WebSocket writer would), the rest
never read. The publisher publishes one item, yields once, and repeats; the
clock stops when every reader has drained. The same workload then runs as a
plain loop of ``send_nowait`` over bare trio memory channels of the same
capacity, with one ``async for`` reader task per fast channel: the floor that
any fan-out over trio channels would start from. Figures are printed as rates
and as the ratio topic / floor measured in the same run (> 1: the topic is
faster). A control line without non-readers follows each mix.

    python bench/topic_fanout.py [--subscribers 10000] [--publishes 50]
                                 [--slow-fraction 0.1] [--capacity 64] [--repeat 2]

For QUEUE the floor drops (closes) a channel the first time it is full, as a
QUEUE topic closes an overflowing subscriber; for CONFLATE the floor keeps
trying a full channel (what a capacity-1 channel does with ``send_nowait``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio
import trio.testing

# Run from a checkout without installing: the repository root holds `actors`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import Policy, Sink, Topic  # noqa: E402


@attrs.frozen
class Result:
    seconds: float
    publish_seconds: float  # time spent inside the publish calls alone
    deliveries: int


@attrs.frozen
class Workload:
    subscribers: int
    publishes: int
    slow_fraction: float
    policy: Policy
    capacity: int

    @property
    def fast(self) -> int:
        return self.subscribers - round(self.subscribers * self.slow_fraction)

    @property
    def buffer(self) -> int:
        return 1 if self.policy is Policy.CONFLATE else self.capacity


async def _drive(
    publish: Callable[[int], None], start_readers: Callable[[trio.Nursery], None], publishes: int
) -> tuple[float, float]:
    """Start the readers, then publish and time it until everything drained."""
    async with trio.open_nursery() as nursery:
        start_readers(nursery)
        await trio.testing.wait_all_tasks_blocked()
        in_publish = 0.0
        began = time.perf_counter()
        for i in range(publishes):
            before = time.perf_counter()
            publish(i)
            in_publish += time.perf_counter() - before
            await trio.sleep(0)
        await trio.testing.wait_all_tasks_blocked()
        elapsed = time.perf_counter() - began
        nursery.cancel_scope.cancel()
    return elapsed, in_publish


async def run_topic(work: Workload) -> Result:
    topic: Topic[int] = Topic("bench", policy=work.policy, capacity=work.buffer)
    sinks = [Sink() for _ in range(work.subscribers)]
    for sink in sinks:
        topic.subscribe(sink)
    delivered = [0]

    async def reader(sink: Sink) -> None:
        while True:
            await sink.wait()
            for sub in sink.pending():
                while sub.take() is not None:
                    delivered[0] += 1

    def start_readers(nursery: trio.Nursery) -> None:
        for sink in sinks[: work.fast]:
            nursery.start_soon(reader, sink)

    elapsed, in_publish = await _drive(topic.publish, start_readers, work.publishes)
    return Result(elapsed, in_publish, delivered[0])


async def run_floor(work: Workload) -> Result:
    pairs = [trio.open_memory_channel[int](work.buffer) for _ in range(work.subscribers)]
    senders = [send for send, _ in pairs]
    delivered = [0]
    drop_when_full = work.policy is Policy.QUEUE

    async def reader(receive: trio.MemoryReceiveChannel[int]) -> None:
        async for _ in receive:
            delivered[0] += 1

    def publish(item: int) -> None:
        full: list[trio.MemorySendChannel[int]] = []
        for send in senders:
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                if drop_when_full:
                    full.append(send)
        for send in full:
            send.close()
            senders.remove(send)

    def start_readers(nursery: trio.Nursery) -> None:
        for _, receive in pairs[: work.fast]:
            nursery.start_soon(reader, receive)

    elapsed, in_publish = await _drive(publish, start_readers, work.publishes)
    return Result(elapsed, in_publish, delivered[0])


def best_of(repeat: int, bench: Callable[[Workload], Awaitable[Result]], work: Workload) -> Result:
    results = [trio.run(bench, work) for _ in range(repeat)]
    return min(results, key=lambda r: r.seconds)


def report(label: str, work: Workload, topic: Result, floor: Result) -> None:
    def rates(r: Result) -> str:
        per_subscriber = r.publish_seconds / work.publishes / work.subscribers
        return (
            f"{work.publishes / r.seconds:8,.1f} publishes/s {r.deliveries / r.seconds:10,.0f} deliveries/s  "
            f"publish call {per_subscriber * 1e9:5.0f} ns/subscriber"
        )

    print(f"{label}")
    print(f"  topic : {rates(topic)}  ({topic.deliveries:,} deliveries)")
    print(f"  floor : {rates(floor)}  ({floor.deliveries:,} deliveries)")
    print(
        f"  ratio topic/floor: end-to-end publishes/s {floor.seconds / topic.seconds:.2f}, "
        f"deliveries/s {(topic.deliveries / topic.seconds) / (floor.deliveries / floor.seconds):.2f}, "
        f"publish call {floor.publish_seconds / topic.publish_seconds:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--publishes", type=int, default=50)
    parser.add_argument("--slow-fraction", type=float, default=0.1, help="subscribers that never read")
    parser.add_argument("--capacity", type=int, default=64, help="QUEUE capacity per subscriber")
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs")
    args = parser.parse_args()
    print(
        f"{args.subscribers:,} subscribers ({args.slow_fraction:.0%} never read), "
        f"{args.publishes:,} publishes, best of {args.repeat}; Python {sys.version.split()[0]}, trio {trio.__version__}"
    )
    for policy in Policy:
        for slow_fraction in (args.slow_fraction, 0.0):
            work = Workload(args.subscribers, args.publishes, slow_fraction, policy, args.capacity)
            topic = best_of(args.repeat, run_topic, work)
            floor = best_of(args.repeat, run_floor, work)
            label = f"{policy.value} (capacity {work.buffer}), {slow_fraction:.0%} never read"
            report(label, work, topic, floor)


if __name__ == "__main__":
    main()
