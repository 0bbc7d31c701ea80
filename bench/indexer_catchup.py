"""Indexer catch-up: decode-and-apply throughput versus fetch-and-decode alone.

    python bench/indexer_catchup.py [--events 20000] [--range 50]

Setup builds a backlog on the embedded chain (eth-tester / py-evm): batches
of 64 ``openPositions`` orders per transaction (one block each), a
``modifyPosition`` and a ``closePosition`` every few batches and a
``FundingUpdated`` now and then, so every kind of state change is in the
mix. py-evm pays ~3 ms of storage-trie work per opened position, so 20,000
events take about a minute to build; the setup time is printed.

Then, over the same blocks and the same eth_getLogs range:

- raw: fetch the logs and ABI-decode them, nothing else — the floor any
  indexer pays on this chain;
- indexer: ``Indexer.poll_once`` until caught up — fetch, decode, block
  header checks, apply to the derived state with undo records, outbox and
  cursor in one SQLite transaction per range, delivery (pending + final) to
  a no-op sink.

The ratio indexer/raw is the cost of durability and reorg safety on top of
reading the chain.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import trio

from perpstream.chain import ChainEvent, Cursor, EventDecoder, IndexedEvent, Indexer, IndexerStore, RawLog
from perpstream.chain.store import Batch
from perpstream.devchain import DevChain, OpenOrder

MARKETS = ("btc-usdc-perp", "eth-usdc-perp", "sol-usdc-perp")
BATCH = 64
BATCH_GAS = 14_000_000  # 64 opens use ~11.2M; an explicit limit skips the estimate run


async def build_backlog(chain: DevChain, events: int) -> int:
    """Send transactions until the chain holds at least ``events`` events."""
    emitted = 0
    batch_no = 0
    while emitted < events:
        trader = chain.traders[batch_no % len(chain.traders)]
        orders = [
            OpenOrder(MARKETS[i % 3], (batch_no + i) % 2 == 0, Decimal(f"{1 + i % 7}.{batch_no % 100:02d}"),
                      Decimal(1000 + 10 * i), Decimal(100 + i % 3))  # one oracle price per market
            for i in range(BATCH)
        ]
        receipt = await chain.open_positions(trader, orders, gas=BATCH_GAS)
        emitted += len(receipt.events)
        if batch_no % 4 == 3:
            ids = receipt.opened_position_ids
            await chain.modify_position(trader, ids[0], size=Decimal(2), collateral=Decimal(900),
                                        price=Decimal(101))
            await chain.close_position(trader, ids[1], exit_price=Decimal(99))
            emitted += 2
        if batch_no % 10 == 9:
            await chain.update_funding(MARKETS[batch_no % 3], rate_per_hour=Decimal("0.00001"),
                                       index=Decimal(batch_no) / 1000, timestamp=batch_no)
            emitted += 1
        batch_no += 1
    return emitted


async def fetch(chain: DevChain, head: int, block_range: int) -> list[list[RawLog]]:
    client = chain.client()
    return [
        await client.get_logs(first, min(head, first + block_range - 1), chain.address)
        for first in range(0, head + 1, block_range)
    ]


def decode(chain: DevChain, ranges: list[list[RawLog]]) -> list[list[ChainEvent]]:
    decoder = EventDecoder(chain.abi)
    return [[decoder.decode(raw) for raw in logs] for logs in ranges]


async def apply_only(chain: DevChain, ranges: list[list[ChainEvent]], head: int, block_range: int,
                     db_path: Path) -> float:
    """The store's share alone: one apply_batch transaction per range, as the indexer commits."""
    client = chain.client()
    cursors = [await client.get_block_header(min(head, first + block_range - 1))
               for first in range(0, head + 1, block_range)]
    store = IndexerStore(db_path)
    started = time.perf_counter()
    for events, header in zip(ranges, cursors):
        assert header is not None
        store.apply_batch(Batch(events, [header], Cursor(header.number, header.hash), final_upto=head - 3))
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


async def index_all(chain: DevChain, db_path: Path, block_range: int) -> tuple[int, int]:
    deliveries = 0

    async def sink(delivery: IndexedEvent) -> None:
        nonlocal deliveries
        deliveries += 1

    store = IndexerStore(db_path)
    indexer = Indexer(chain.client(), store, address=chain.address, on_event=sink, confirmations=3,
                      max_block_range=block_range)
    applied = 0
    while True:
        outcome = await indexer.poll_once()
        applied += outcome.events
        if outcome.caught_up:
            store.close()
            return applied, deliveries


async def main(events: int, block_range: int) -> None:
    started = time.perf_counter()
    chain = await DevChain.start(traders=12)
    emitted = await build_backlog(chain, events)
    head = await chain.block_number()
    setup_s = time.perf_counter() - started
    print(f"setup: {emitted:,} events in {head:,} blocks, built in {setup_s:.1f} s "
          f"({setup_s / emitted * 1000:.2f} ms per event on py-evm)")

    async def raw_run() -> tuple[float, float, list[list[ChainEvent]]]:
        t0 = time.perf_counter()
        ranges = await fetch(chain, head, block_range)
        t1 = time.perf_counter()
        decoded = decode(chain, ranges)
        return t1 - t0, time.perf_counter() - t1, decoded

    await fetch(chain, head, block_range)  # warm-up: the measured runs find the same caches
    # raw runs before and after the indexer run, averaged, so that a change in
    # machine load during the run does not tilt the ratio
    fetch_before, decode_before, decoded = await raw_run()
    with tempfile.TemporaryDirectory() as tmp:
        apply_s = await apply_only(chain, decoded, head, block_range, Path(tmp, "apply.sqlite3"))
        t0 = time.perf_counter()
        applied, deliveries = await index_all(chain, Path(tmp, "indexer.sqlite3"), block_range)
        index_s = time.perf_counter() - t0
        db_mb = Path(tmp, "indexer.sqlite3").stat().st_size / 1e6
    fetch_after, decode_after, _ = await raw_run()
    fetch_s, decode_s = (fetch_before + fetch_after) / 2, (decode_before + decode_after) / 2
    raw_s = fetch_s + decode_s
    assert sum(map(len, decoded)) == applied == emitted, (sum(map(len, decoded)), applied, emitted)
    print(f"raw runs: {fetch_before + decode_before:.2f} s before, {fetch_after + decode_after:.2f} s after "
          "the indexer run")

    print(f"\neth_getLogs range {block_range} blocks; indexer delivered {deliveries:,} "
          f"(pending + final); SQLite file {db_mb:.1f} MB\n")
    print(f"| {'phase':<46} | {'seconds':>7} | {'events/s':>9} | {'vs raw':>6} |")
    print(f"|{'-' * 48}|{'-' * 9}|{'-' * 11}|{'-' * 8}|")
    rows = [
        ("fetch: eth_getLogs on eth-tester", fetch_s),
        ("decode: ABI-decode to events", decode_s),
        ("raw = fetch + decode (baseline, mean of 2)", raw_s),
        ("apply + commit alone (SQLite, 1 tx per range)", apply_s),
        ("indexer end to end (+ headers, deliveries)", index_s),
    ]
    for name, seconds in rows:
        print(f"| {name:<46} | {seconds:7.2f} | {emitted / seconds:9,.0f} | {seconds / raw_s:5.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--range", type=int, default=50, dest="block_range",
                        help="eth_getLogs block range (64 opens per block)")
    args = parser.parse_args()
    trio.run(main, args.events, args.block_range)
