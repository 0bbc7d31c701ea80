"""The indexer against a real node: catch-up through a provider's range limit, and how
soon a reset node makes the daemon not ready.

    python bench/node_limits.py [--blocks 3000] [--trades 100] [--limit 50] [--resets 5]

Needs Node.js and npm: Hardhat's node runs as its own process (installed into
tests/chain/hardhat from the committed lock file on first use), with the
exchange deployed from the committed artifact.

Catch-up: a backlog of ``--blocks`` blocks holding ``--trades`` position opens
spread evenly. The indexer reads it from block 0 four ways, each into a fresh
index, all in this run:

- baseline: straight to the node with ``max_block_range`` = the limit: the
  fewest requests a client that already knew the limit would make; and the
  same through the proxy refusing nothing, which is the proxy's own cost;
- through a proxy that refuses spans over ``--limit`` blocks in 1rpc's words
  ("eth_getLogs is limited to 0 - 50 blocks range") and in Alchemy's (which
  also suggests a range), with the default ``max_block_range`` (2000): the
  indexer has to learn the limit from the refusal;
- the same in Scroll geth's words, which state no number: the span halves
  until it fits.

Figures are blocks per second and the ratio against the baseline.

Reset: the daemon (poll interval 2 s, as in config/rpc.example.toml) indexes
the node; ``hardhat_reset`` and a redeploy follow; the time from the reset's
reply to the first /readyz that answers 503 naming the chain is measured
``--resets`` times, and given as a ratio of the poll interval as well.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perpstream.chain.events import IndexedEvent  # noqa: E402
from perpstream.chain.indexer import Indexer  # noqa: E402
from perpstream.chain.jsonrpc import JsonRpcChainClient  # noqa: E402
from perpstream.chain.store import IndexerStore  # noqa: E402
from tests.chain.hardhat_node import HardhatNode, deploy_exchange, exchange_at, install_hardhat  # noqa: E402
from tests.chain.node_daemon import node_config, wait_readiness  # noqa: E402
from tests.chain.range_proxy import Provider, RangeLimitProxy, span_providers  # noqa: E402
from tests.reliability.clients import daemon_with  # noqa: E402

POLL_INTERVAL_MS = 2000


async def build_backlog(node: HardhatNode, address: str, blocks: int, trades: int) -> int:
    exchange = exchange_at(node, address)
    gap = max(1, blocks // trades)
    for i in range(trades):
        await exchange.open_position(exchange.traders[i % len(exchange.traders)], "btc-usdc-perp",
                                     is_long=i % 2 == 0, size=Decimal("1"), collateral=Decimal("100"),
                                     entry_price=Decimal("100"))
        await node.mine(gap - 1)
    return await node.head()


async def catch_up(url: str, address: str, db: Path, max_block_range: int) -> tuple[float, int, int]:
    """Seconds to index up to the head, events applied, block range at the end."""
    async def sink(delivery: IndexedEvent) -> None:
        pass

    async with JsonRpcChainClient(url) as client:
        store = IndexerStore(db)
        indexer = Indexer(client, store, address=address, on_event=sink, confirmations=3,
                          max_block_range=max_block_range)
        started = time.perf_counter()
        events = 0
        while not (outcome := await indexer.poll_once()).caught_up:
            events += outcome.events
        events += outcome.events
        elapsed = time.perf_counter() - started
        store.close()
    return elapsed, events, indexer.status.block_range


async def through(node: HardhatNode, provider: Provider, address: str, db: Path) -> tuple[float, int, int, int]:
    proxy = RangeLimitProxy(node.url, provider)
    async with trio.open_nursery() as nursery:
        await proxy.up(nursery)
        elapsed, events, span = await catch_up(proxy.url, address, db, 2000)
        proxy.down()
    await proxy.aclose()
    return elapsed, events, span, sum(1 for call in proxy.get_logs if call[2])


async def _through_forwarder(node: HardhatNode, address: str, db: Path, limit: int) -> tuple[float, int, int]:
    """The proxy's own cost: it forwards everything, the indexer already knows the limit."""
    proxy = RangeLimitProxy(node.url, Provider("forwarder", lambda first, last, logs: None))
    async with trio.open_nursery() as nursery:
        await proxy.up(nursery)
        result = await catch_up(proxy.url, address, db, limit)
        proxy.down()
    await proxy.aclose()
    return result


async def reset_to_not_ready(node: HardhatNode, address: str, workdir: Path, resets: int) -> list[float]:
    delays = []
    for i in range(resets):
        data = workdir / f"reset-{i}"
        await trio.to_thread.run_sync(deploy_exchange, node)
        await node.mine(10)
        config = node_config(data, node.url, address, poll_interval_ms=POLL_INTERVAL_MS)
        async with daemon_with(config) as daemon:
            await wait_readiness(daemon, ready=True, timeout=60)
            await node.reset()
            reset_at = time.perf_counter()
            await wait_readiness(daemon, "below the indexed block", timeout=60)
            delays.append(time.perf_counter() - reset_at)
        await node.reset()
    return delays


async def main(blocks: int, trades: int, limit: int, resets: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        node = HardhatNode(install_hardhat(), workdir / "node.log")
        try:
            address = await trio.to_thread.run_sync(deploy_exchange, node)
            head = await build_backlog(node, address, blocks, trades)
            print(f"backlog: {trades} opens in {head + 1} blocks on Hardhat's node; provider limit {limit} blocks\n")
            base_s, base_events, _ = await catch_up(node.url, address, workdir / "base.sqlite3", limit)
            rows = [("baseline: direct, max_block_range = limit", base_s, base_events, limit, 0)]
            hop_s, hop_events, _ = await _through_forwarder(node, address, workdir / "hop.sqlite3", limit)
            rows.append(("proxy, forwarding only, range = limit", hop_s, hop_events, limit, 0))
            for provider in span_providers(limit):
                if provider.name not in ("1rpc", "alchemy", "scroll-geth"):
                    continue
                seconds, events, span, refusals = await through(
                    node, provider, address, workdir / f"{provider.name}.sqlite3")
                rows.append((f"through proxy, {provider.name} wording", seconds, events, span, refusals))
            print(f"| {'run':<44} | {'seconds':>7} | {'blocks/s':>8} | {'vs base':>7} | {'range':>5} | refusals |")
            print(f"|{'-' * 46}|{'-' * 9}|{'-' * 10}|{'-' * 9}|{'-' * 7}|{'-' * 10}|")
            for name, seconds, events, span, refusals in rows:
                assert events == base_events == trades, (name, events, base_events)
                print(f"| {name:<44} | {seconds:7.2f} | {(head + 1) / seconds:8,.0f} | {seconds / base_s:6.2f}x "
                      f"| {span:5d} | {refusals:8d} |")

            await node.reset()
            delays = await reset_to_not_ready(node, address, workdir, resets)
            median = statistics.median(delays)
            print(f"\nhardhat_reset -> /readyz 503 (poll interval {POLL_INTERVAL_MS} ms), {resets} runs: "
                  f"median {median:.2f} s, max {max(delays):.2f} s "
                  f"({median * 1000 / POLL_INTERVAL_MS:.2f} poll intervals)")
        finally:
            node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3000)
    parser.add_argument("--trades", type=int, default=100)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--resets", type=int, default=5)
    args = parser.parse_args()
    trio.run(main, args.blocks, args.trades, args.limit, args.resets)
