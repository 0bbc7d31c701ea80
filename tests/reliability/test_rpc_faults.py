"""The chain node fails: errors, timeouts, garbage, a node that goes away.

Real time and real sockets: a JSON-RPC node on a loopback port in front of
a real eth-tester chain (``faulty_rpc``), failing on command. The indexer
must back off, carry on, and lose nothing: its deliveries and its state
are compared with a run against a node that never failed.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from perpstream.chain import Indexer, IndexerStore, JsonRpcChainClient, PositionStore, RetryPolicy
from perpstream.devchain import DevChain
from perpstream.config import parse_config
from tests.chain.helpers import BTC, Recorder, assert_store_matches_contract
from tests.chain.test_chain_crash import make_history, reference_run

from .clients import RunningDaemon, daemon_with
from .faulty_rpc import FaultyRpcNode

pytestmark = pytest.mark.e2e


async def wait_for(predicate: Any, *, timeout: float = 20.0, step: float = 0.02) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)


async def test_the_indexer_rides_out_errors_timeouts_and_an_outage_with_nothing_lost(tmp_path: Path) -> None:
    chain = await DevChain.start(traders=6)
    await make_history(chain, 6)
    await chain.mine(3)
    head = await chain.block_number()
    reference, expected = await reference_run(chain, tmp_path / "reference.sqlite3", max_block_range=2)

    node = FaultyRpcNode(chain)
    node.faults = {3: "http_503", 8: "rpc_internal_error", 13: "hang", 14: "hang", 21: "not_json",
                   27: "reset", 33: "rate_limited", 38: "deep_json", 41: "hang", 47: "http_503"}
    sink = Recorder()
    path = tmp_path / "faulty.sqlite3"
    async with trio.open_nursery() as nursery:
        await node.up(nursery)
        async with JsonRpcChainClient(node.url, timeout_s=0.3) as client:
            indexer = Indexer(client, IndexerStore(path), address=chain.address, on_event=sink, confirmations=2,
                              max_block_range=2, poll_interval_s=0.02,
                              retry=RetryPolicy(initial_delay_s=0.05, max_delay_s=0.2, max_attempts=50))
            nursery.start_soon(indexer.run)
            status = indexer.status

            # Half way through, the node goes away for a second.
            await wait_for(lambda: (status.indexed_block or 0) >= head // 2)
            assert status.indexed_block is not None and status.indexed_block < head
            node.down()
            await wait_for(lambda: status.consecutive_failures >= 3)
            assert "ConnectError" in (status.last_error or "")
            await trio.sleep(1)
            await node.up(nursery)

            await wait_for(lambda: len(sink.deliveries) >= len(reference.deliveries))
            # Caught up for good: a keep-alive connection the outage closed may
            # still cost one failed (and retried) request after the last delivery.
            await wait_for(lambda: status.consecutive_failures == 0 and status.indexed_block == head)
            nursery.cancel_scope.cancel()

    assert sorted(node.faults_served) == sorted(node.faults.values())
    assert status.consecutive_failures == 0 and status.indexed_block == head
    assert status.rpc_errors >= len(node.faults) + 3
    assert sink.deliveries == reference.deliveries  # exactly once, in order
    reader = PositionStore(path)
    assert reader.snapshot() == expected
    await assert_store_matches_contract(chain, reader)


async def indexer_node(daemon: RunningDaemon) -> dict[str, Any]:
    tree = (await daemon.get("/debug/actors")).json()
    chain = next(c for c in tree["root"]["children"] if c["name"] == "chain")
    return next(c for c in chain["children"] if c["name"] == "indexer")


async def test_the_daemon_keeps_serving_while_its_node_is_away_and_catches_up(tmp_path: Path) -> None:
    chain = await DevChain.start(traders=6)
    await make_history(chain, 2)
    trader = chain.traders[0]
    node = FaultyRpcNode(chain)
    config = parse_config({
        "server": {"data_dir": str(tmp_path)},
        "chain": {"source": "rpc", "rpc_url": node.url, "contract_address": chain.address,
                  "confirmations": 2, "poll_interval_ms": 100, "max_block_range": 4, "rpc_timeout_s": 0.5},
        "streams": {"prices_interval_ms": 250},
    })
    async with trio.open_nursery() as nursery:
        await node.up(nursery)
        async with daemon_with(config) as daemon, trio.open_nursery() as clients:
            with trio.fail_after(30):
                while (await daemon.get("/readyz")).status_code != 200:
                    await trio.sleep(0.1)
            prices = await daemon.listen(clients, "/api/v1/ws/prices/btc-usdc-perp")
            positions = await daemon.listen(clients, f"/api/v1/ws/positions/{trader}")
            await positions.next("positions_update")

            # The node answers with errors for a moment: retried in place.
            errors = ["http_503", "rpc_internal_error"]
            node.faults = {node.requests + k: fault for k, fault in enumerate(errors, start=1)}
            with trio.fail_after(10):
                while len(node.faults_served) < len(errors) or (await indexer_node(daemon))["details"]["last_error"] \
                        is None:
                    await trio.sleep(0.05)
            with trio.fail_after(10):
                while (await daemon.get("/readyz")).status_code != 200:
                    await trio.sleep(0.1)
            # A request it never answers times out after chain.rpc_timeout_s, and is retried.
            node.faults = {node.requests + 1: "hang"}
            with trio.fail_after(5):  # the default timeout (15 s) would not do
                while "timed out" not in str((await indexer_node(daemon))["details"]["last_error"]):
                    await trio.sleep(0.05)
            with trio.fail_after(10):
                while (await daemon.get("/readyz")).status_code != 200:
                    await trio.sleep(0.1)
            # Then it goes away altogether, while a trade happens on chain.
            node.down()
            away_at = trio.current_time()
            opened = await chain.open_position(trader, BTC, is_long=True, size=Decimal("2"),
                                               collateral=Decimal("500"), entry_price=Decimal("65000"))
            [position_id] = opened.opened_position_ids
            # (A request in flight when it went may fail as RemoteProtocolError; the next are refused.)
            with trio.fail_after(10):
                while "ConnectError" not in " ".join((response := await daemon.get("/readyz")).json().get(
                        "reasons", [])):
                    await trio.sleep(0.1)
            assert response.status_code == 503
            assert "chain indexer is failing: TransientChainError" in " ".join(response.json()["reasons"])
            await trio.sleep(2)
            assert (await daemon.get("/healthz")).status_code == 200
            await node.up(nursery)
            back_at = trio.current_time()

            event = await positions.next("position_opened", lambda m: m["position_id"] == position_id,
                                         timeout=20)
            assert event["finality"] == "pending" and event["event"]["tx_hash"] == opened.tx_hash
            with trio.fail_after(20):
                while (await daemon.get("/readyz")).status_code != 200:
                    await trio.sleep(0.1)
            served = (await daemon.get("/api/v1/positions?limit=1000")).json()["positions"]
            indexer = await indexer_node(daemon)
            clients.cancel_scope.cancel()
        nursery.cancel_scope.cancel()

    on_chain = {p.position_id: p for p in await chain.open_positions_view()}
    assert {p["position_id"]: Decimal(p["size"]) for p in served} == {i: p.size for i, p in on_chain.items()}
    assert indexer["restarts"] == 0  # the indexer backed off in place; no restart was needed
    assert indexer["details"]["lag"] is not None and indexer["details"]["lag"] <= 2
    # The rest of the daemon never stopped: prices kept their cadence (a tick
    # every 0.4 s) through the outage.
    ticks = [at for at, m in prices.frames if m["type"] == "price_update"]
    during = [at for at in ticks if away_at <= at <= back_at]
    assert len(during) >= 4 and max(b - a for a, b in zip(ticks, ticks[1:])) < 1.0
    assert prices.close_code is None and positions.close_code is None
