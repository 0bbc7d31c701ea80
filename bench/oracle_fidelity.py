"""Oracle fidelity: how much of Hermes's price stream reaches the markets, and at what request cost.

Two figures, each against a baseline measured in the same run:

1. **Share of distinct prices delivered.** The replay derived from a real
   published BTC+ETH Hermes update (``tests/feeds/replay.py``: 400 ms slots,
   two or three sharing each whole-second ``publish_time``) is served by the
   real-format Hermes look-alike on a loopback socket; ``HermesFeed`` reads
   it and every update it hands on (what the feed actor routes to the
   markets) is counted. The baseline is the same stream through the former
   rule, newest ``publish_time`` only.
2. **Requests per minute through a storm.** On trio's virtual clock, a
   scripted Hermes drops every connection right after one price and answers
   every third attempt with 503, for ten minutes; every request is counted.
   The baseline is the same feed with an unlimited request budget (backoff
   alone). Pyth allows 180 a minute (30 per 10 s) from one address.

    .venv/bin/python bench/oracle_fidelity.py [--slots 600] [--storm-minutes 10]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perpstream.domain.prices import PriceUpdate  # noqa: E402
from perpstream.feeds import HermesConfig, HermesFeed, decode_hermes_payload  # noqa: E402
from tests.feeds.fake_hermes import DROP, FakeHermes, Refuse  # noqa: E402
from tests.feeds.hermes_shapes import BTC, ETH, entry, payload, sse  # noqa: E402
from tests.feeds.replay import derived_replay, distinct_prices  # noqa: E402
from tests.reliability.hermes_server import LoopbackHermes  # noqa: E402


async def replay_share(slots: int) -> tuple[int, int, int]:
    """(distinct prices in the replay, delivered by the feed, passing the old publish_time-only rule)."""
    replay = derived_replay(slots)
    expected = distinct_prices(replay)
    hermes = LoopbackHermes(BTC, price=0, replay=replay, slot_seconds=0.01)
    feed = HermesFeed(HermesConfig(feed_ids=(BTC, ETH), base_url=hermes.url, price_timeout=60.0))
    delivered: list[PriceUpdate] = []
    done = trio.Event()

    async def on_update(update: PriceUpdate) -> None:
        delivered.append(update)
        if len(delivered) >= len(expected):
            done.set()

    async with trio.open_nursery() as nursery:
        await hermes.up(nursery)
        nursery.start_soon(feed.run, on_update)
        with trio.move_on_after(slots * 0.01 + 20):
            await done.wait()
        nursery.cancel_scope.cancel()
    newest: dict[str, int] = {}
    old_rule = 0
    for document in replay:
        for update in _decode(document):
            if update.publish_time > newest.get(update.feed_id, -1):
                newest[update.feed_id] = update.publish_time
                old_rule += 1
    return len(expected), len(delivered), old_rule


def _decode(document: str) -> tuple[PriceUpdate, ...]:
    return decode_hermes_payload(document, {BTC, ETH}).updates


def storm_requests(minutes: int, *, budgeted: bool) -> float:
    """Requests a minute made by the feed through a storm of drops and 503s (virtual time)."""
    storm: list[Any] = []
    for n in range(20_000):
        storm.append([sse(payload(entry(BTC, 100 + n, 1000 + n))), DROP] if n % 3 else Refuse(503))
    hermes = FakeHermes(streams=storm, latest=lambda: payload(entry(BTC, 1, 999)))
    limits = {} if budgeted else {"requests_per_minute": 1e9, "request_burst": 1_000_000}
    config = HermesConfig(feed_ids=(BTC,), base_url="https://hermes.test", backoff_initial=0.5, rng_seed=1, **limits)
    feed = HermesFeed(config, transport=hermes.transport)

    async def main() -> None:
        async def ignore(update: PriceUpdate) -> None:
            pass

        with trio.move_on_after(minutes * 60):
            await feed.run(ignore)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return len(hermes.requests) / minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=600)
    parser.add_argument("--storm-minutes", type=int, default=10)
    args = parser.parse_args()
    logging.getLogger("perpstream.feeds").setLevel(logging.ERROR)  # the storm's reconnects are the point

    distinct, delivered, old_rule = trio.run(replay_share, args.slots)
    print(f"replay: {args.slots} slots, {distinct} distinct prices (BTC + ETH)")
    print(f"  delivered to the markets: {delivered} = {delivered / distinct:.1%}")
    print(f"  baseline, newest publish_time only: {old_rule} = {old_rule / distinct:.1%}")
    print(f"  ratio delivered / baseline: {delivered / old_rule:.2f}")
    budgeted = storm_requests(args.storm_minutes, budgeted=True)
    unbudgeted = storm_requests(args.storm_minutes, budgeted=False)
    print(f"storm: {args.storm_minutes} min of drops after one price and 503s (virtual clock)")
    print(f"  requests per minute, with the request budget (30/min, burst 6): {budgeted:.1f}")
    print(f"  baseline, backoff alone: {unbudgeted:.1f}")
    print(f"  ratio budgeted / baseline: {budgeted / unbudgeted:.3f}  (Pyth's limit: 180 a minute)")


if __name__ == "__main__":
    main()
