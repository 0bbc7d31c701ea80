"""An indexer in its own process, for the kill -9 test.

Usage: python indexer_process.py RPC_URL CONTRACT DB_PATH DELIVERY_LOG

Indexes over JSON-RPC and appends every delivery to DELIVERY_LOG as a JSON
line (finality, tx_hash, log_index, block_hash), flushed before the
delivery counts as done.
"""

from __future__ import annotations

import json
import logging
import sys

import trio

from perpstream.chain import IndexedEvent, Indexer, IndexerStore, JsonRpcChainClient


async def main(url: str, address: str, db_path: str, log_path: str) -> None:
    with open(log_path, "a", encoding="utf-8") as out:

        async def record(delivery: IndexedEvent) -> None:
            meta = delivery.event.meta
            line = {"finality": delivery.finality, "tx_hash": meta.tx_hash, "log_index": meta.log_index,
                    "block_hash": meta.block_hash}
            out.write(json.dumps(line) + "\n")
            out.flush()

        async with JsonRpcChainClient(url) as client:
            indexer = Indexer(client, IndexerStore(db_path), address=address, on_event=record,
                              confirmations=2, max_block_range=3, poll_interval_s=0.02)
            await indexer.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(main, *sys.argv[1:5])
