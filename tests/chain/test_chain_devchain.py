"""The eth-tester behaviour the dev chain relies on (documented in embedded.py), and its block timer."""

from __future__ import annotations

import time

import trio

from perpstream.devchain import DevChain
from perpstream.services.demo_actors import DevChainActor, NodeHandle

from .helpers import BTC, d


async def test_every_transaction_is_mined_in_its_own_block(chain: DevChain) -> None:
    start = await chain.block_number()
    first = await chain.update_funding(BTC, rate_per_hour=d("0"), index=d("0"), timestamp=1)
    second = await chain.update_funding(BTC, rate_per_hour=d("0"), index=d("0"), timestamp=2)
    assert (first.block_number, second.block_number) == (start + 1, start + 2)
    assert await chain.block_number() == start + 2


async def test_revert_then_mine_gives_new_hashes_and_rising_timestamps(chain: DevChain) -> None:
    client = chain.client()
    fork_point = await chain.snapshot()
    height = await chain.block_number()
    await chain.mine(3)
    old = [await client.get_block_header(height + i) for i in (1, 2, 3)]
    await chain.revert(fork_point)
    assert await chain.block_number() == height
    assert await client.get_block_header(height + 1) is None
    await chain.mine(3)
    new = [await client.get_block_header(height + i) for i in (1, 2, 3)]
    assert all(a and b and a.hash != b.hash for a, b in zip(old, new))  # same (empty) contents
    fork_header = await client.get_block_header(height)
    assert fork_header is not None and new[0] is not None
    assert new[0].parent_hash == fork_header.hash
    stamps = [h.timestamp for h in new if h is not None]
    assert stamps == sorted(set(stamps))  # strictly increasing, one second at least



async def test_the_block_timer_mines_only_while_the_chain_is_idle(chain: DevChain) -> None:
    # Busy trading (more than a block a second) runs eth-tester's block time
    # ahead of the wall clock; a timer that mined regardless would keep it
    # ahead for ever, until the oracle refused every fresh price as stale.
    await chain.advance_time(120)  # block time two minutes ahead, as after a busy spell
    wall = [time.time()]
    actor = DevChainActor(NodeHandle(chain), traders=0, block_interval_s=0.01, market_risk={}, market_feeds={},
                          wall_clock=lambda: wall[0])
    ahead = await chain.block_number()
    with trio.move_on_after(0.3):
        await actor._mine()
    assert await chain.block_number() == ahead  # ahead of the wall clock: no empty blocks
    wall[0] = await chain.head_timestamp() + 1  # the wall clock has caught up: idle again
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor._mine)
            while await chain.block_number() == ahead:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
