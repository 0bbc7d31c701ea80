"""eth_getLogs range control against a node that refuses big replies."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from perpstream.chain import Indexer, IndexerStore, JsonRpcChainClient
from perpstream.chain.indexer import BlockRange, BlockTooLargeError
from perpstream.devchain import DevChain, OpenOrder

from .helpers import BTC, Recorder, assert_store_matches_contract, d, poll_until_caught_up
from .rpc_node import DevChainNode


def test_block_range_halves_and_grows_back() -> None:
    span = BlockRange(64, grow_after=2)
    span.refused(64)
    assert span.current == 32
    span.refused(32)
    span.refused(16)
    assert span.current == 8
    span.succeeded()
    assert span.current == 8
    span.succeeded()
    assert span.current == 16
    for _ in range(10):
        span.succeeded()
    assert span.current == 64
    span.refused(1)
    assert span.current == 1


async def test_range_shrinks_on_too_many_results_and_grows_back(chain: DevChain, db_path: Path) -> None:
    # 6 dense blocks of 5 events, then 100 empty blocks
    for i in range(6):
        orders = [OpenOrder(BTC, j % 2 == 0, d(f"1.{i}{j}"), d("10"), d("100")) for j in range(5)]
        await chain.open_positions(chain.traders[i % 6], orders)
    await chain.mine(100)
    node = DevChainNode(chain, max_logs=12)  # refuses like Infura beyond 12 logs
    sink = Recorder()
    client = JsonRpcChainClient("http://node.test/", http=httpx.AsyncClient(transport=node.transport()))
    indexer = Indexer(client, IndexerStore(db_path), address=chain.address, on_event=sink,
                      confirmations=3, max_block_range=16)

    await poll_until_caught_up(indexer)

    spans = [(last - first + 1, refused) for first, last, refused in node.get_logs_calls]
    assert spans[0] == (16, True)
    assert any(refused for _, refused in spans)
    smallest = min(span for span, refused in spans if not refused)
    assert smallest <= 2  # 12 logs allow two dense blocks at most
    # after the last refusal the range only grows, back to the maximum
    last_refusal = max(i for i, (_, refused) in enumerate(spans) if refused)
    growing = [span for span, _ in spans[last_refusal + 1:-1]]  # the last one is cut at the head
    assert growing == sorted(growing) and growing[-1] == 16
    assert indexer.status.block_range == 16
    assert len(sink.events("pending")) == 30
    await assert_store_matches_contract(chain, indexer.positions())


async def test_a_single_block_too_big_is_an_error(chain: DevChain, db_path: Path) -> None:
    orders = [OpenOrder(BTC, True, d("1"), d("10"), d("100")) for _ in range(5)]
    block = (await chain.open_positions(chain.traders[0], orders)).block_number
    node = DevChainNode(chain, max_logs=3)
    client = JsonRpcChainClient("http://node.test/", http=httpx.AsyncClient(transport=node.transport()))
    indexer = Indexer(client, IndexerStore(db_path), address=chain.address, on_event=Recorder())
    with pytest.raises(BlockTooLargeError, match=f"block {block} alone has more logs"):
        await poll_until_caught_up(indexer)
    assert node.get_logs_calls[-1][:2] == (block, block)  # shrunk down to the one block
