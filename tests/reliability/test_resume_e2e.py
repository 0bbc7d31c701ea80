"""Nothing lost across a reconnect, end to end: real daemon, real sockets, the demo trading.

A control client stays connected; another drops its connection at random
moments (seeded, printed) and resumes each time with ``since``. In the end
the second has exactly the control client's events, in order, each once.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any

import httpx
import pytest
import trio

from tests.clients.live import demo_account, stormy_config
from tests.reliability.clients import daemon_with
from tests.reliability.resuming import ResumingClient

pytestmark = pytest.mark.e2e

ROUNDS = 8
# The demo trades at random on a chain mining in real time, so how many
# events a round sees varies with the machine's load: past ROUNDS the client
# goes on dropping until the streams have had enough events to compare.
MIN_EVENTS = 10
MAX_ROUNDS = 40


def events_after(client: ResumingClient, name: str, first: int, last: int) -> list[dict[str, Any]]:
    return [e for e in client.events.get(name, []) if first < e["offset"] <= last]


def events_since(client: ResumingClient, first: dict[str, int]) -> int:
    """How many events ``client`` has had after the offsets in ``first``, over its streams."""
    return sum(e["offset"] > offset for name, offset in first.items() for e in client.events.get(name, []))


async def test_a_client_dropping_at_random_moments_ends_with_the_control_client_s_events(tmp_path: Any) -> None:
    seed = int(os.environ.get("PERPSTREAM_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (PERPSTREAM_TEST_SEED={seed} repeats this run)")
    rng = random.Random(seed)
    async with daemon_with(stormy_config(tmp_path / "data")) as daemon, \
            httpx.AsyncClient(base_url=daemon.http) as http:
        account = await demo_account(http)
        streams = {
            "liquidations": {"channel": "liquidations"},
            f"positions:{account}": {"channel": "positions", "user_address": account},
        }
        base = daemon.ws("")
        control, resumer = ResumingClient(base, streams), ResumingClient(base, streams)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(control.connected_for, math.inf)
            first: dict[str, int] = {}
            rounds = 0
            while rounds < ROUNDS or (rounds < MAX_ROUNDS and events_since(control, first) < MIN_EVENTS):
                await resumer.connected_for(rng.uniform(0.1, 1.0))
                first = first or {name: offset for name, (_, offset) in resumer.positions.items()}
                await trio.sleep(rng.uniform(0.0, 1.0))  # away: the events of this gap must come back
                rounds += 1
            nursery.start_soon(resumer.connected_for, math.inf)
            await resumer.wait_until(lambda: len(resumer.recovered) == len(streams) * (rounds + 1))
            last = {name: offset for name, (_, offset) in control.positions.items()}
            for name, offset in last.items():
                await resumer.wait_for_offset(name, offset)
            nursery.cancel_scope.cancel()

    assert set(first) == set(streams), "the first connection saw a frame of every stream"
    assert resumer.recovered == [None] * len(streams) + [True] * len(streams) * rounds
    assert control.repeats == [] and resumer.repeats == [], "a frame at or below an offset already sent"
    compared = 0
    for name in streams:
        expected = events_after(control, name, first[name], last[name])
        assert events_after(resumer, name, first[name], last[name]) == expected, name
        compared += len(expected)
    assert compared >= MIN_EVENTS, f"only {compared} events in {rounds} rounds: the run proves little"
