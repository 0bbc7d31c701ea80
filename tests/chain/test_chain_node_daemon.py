"""The whole daemon against Hardhat's node when the chain goes wrong (defects 3, 4, 5, 7).

What retrying cannot fix stops the indexer and only the indexer: /readyz
names the reason and the way out, every stream keeps serving, nothing is
restarted in a loop and the daemon exits only when asked to.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from perpstream.devchain import OpenOrder
from perpstream.cli import main
from perpstream.daemon import run_daemon
from perpstream.data_lock import DataDirLocked
from perpstream.clock import WallClock
from perpstream.sources import index_path, open_sources
from tests.reliability.clients import daemon_with

from .conftest import OnNode
from .hardhat_node import deploy_exchange
from .helpers import BTC, d
from .node_daemon import indexer_actor, node_config, wait_readiness
from .range_proxy import RangeLimitProxy, reth_max_results

pytestmark = pytest.mark.e2e


async def test_a_block_over_the_providers_cap_stops_the_indexer_not_the_daemon(hardhat: OnNode,
                                                                                tmp_path: Path) -> None:
    exchange = hardhat.exchange
    orders = [OpenOrder(BTC, True, d("1"), d("10"), d("100")) for _ in range(5)]
    receipt = await exchange.open_positions(exchange.traders[0], orders)
    proxy = RangeLimitProxy(hardhat.node.url, reth_max_results(3))
    async with trio.open_nursery() as nursery:
        await proxy.up(nursery)
        config = node_config(tmp_path, proxy.url, hardhat.address)
        async with daemon_with(config) as daemon, trio.open_nursery() as clients:
            reasons = await wait_readiness(daemon, "chain indexer stopped")
            assert f"block {receipt.block_number} alone has more logs" in reasons[0]
            assert "more logs per eth_getLogs" in reasons[0]
            prices = await daemon.listen(clients, "/api/v1/ws/prices/btc-usdc-perp")
            for _ in range(3):  # the other streams keep serving
                await prices.next("price_update")
            indexer = await indexer_actor(daemon)
            assert indexer["restarts"] == 0 and indexer["state"] == "running"
            assert (await daemon.get("/healthz")).status_code == 200
            clients.cancel_scope.cancel()
        proxy.down()
        await proxy.aclose()


async def test_a_reset_node_makes_the_daemon_not_ready_at_once(hardhat: OnNode, tmp_path: Path) -> None:
    exchange = hardhat.exchange
    await exchange.open_position(exchange.traders[0], BTC, is_long=True, size=d("1"), collateral=d("100"),
                                 entry_price=d("100"))
    await hardhat.node.mine(10)
    async with daemon_with(node_config(tmp_path, hardhat.node.url, hardhat.address)) as daemon:
        await wait_readiness(daemon, ready=True)
        await hardhat.node.reset()
        await trio.to_thread.run_sync(deploy_exchange, hardhat.node)
        # behind at once, or already stopped when a remembered block is seen replaced
        reasons = " ".join(await wait_readiness(daemon, "below the indexed block", timeout=5))
        assert "reset" in reasons
        metrics = (await daemon.get("/metrics")).text
        lag = next(line for line in metrics.splitlines() if line.startswith("perpstream_indexer_lag_blocks"))
        assert float(lag.split()[-1]) < 0  # honest: the node is behind the index, not caught up


async def test_a_replaced_chain_stops_the_indexer_until_reindexed(hardhat: OnNode, tmp_path: Path) -> None:
    node, exchange = hardhat.node, hardhat.exchange
    await exchange.open_position(exchange.traders[0], BTC, is_long=True, size=d("1"), collateral=d("100"),
                                 entry_price=d("100"))
    await node.mine(3)
    config = node_config(tmp_path, node.url, hardhat.address)
    async with daemon_with(config) as daemon:
        await wait_readiness(daemon, ready=True)
        await node.reset()  # another chain under the same genesis, longer than the old one
        await trio.to_thread.run_sync(deploy_exchange, node)
        await exchange.open_position(exchange.traders[1], BTC, is_long=False, size=d("2"), collateral=d("100"),
                                     entry_price=d("100"))
        await node.mine(20)
        # (seen below the cursor first, or once past it as a reorg too deep: either way stopped)
        reasons = await wait_readiness(daemon, "chain indexer stopped")
        assert "perpstream reindex" in reasons[0]
        assert (await indexer_actor(daemon))["restarts"] == 0
        # the daemon stays up until an operator stops it

    # the operator stops it, reindexes, starts it again: the index is of the new chain
    config_file = tmp_path / "perpstream.toml"
    config_file.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[chain]\nsource = "rpc"\nrpc_url = "{node.url}"\n'
        f'contract_address = "{hardhat.address}"\n')
    assert await trio.to_thread.run_sync(main, ["reindex", "--config", str(config_file)]) == 0
    async with daemon_with(config) as daemon:
        await wait_readiness(daemon, ready=True)
        served = (await daemon.get("/api/v1/positions?limit=100")).json()["positions"]
    on_chain = await exchange.open_positions_view()
    assert [(p["position_id"], p["side"]) for p in served] == [(p.position_id, "short") for p in on_chain]


async def test_a_second_daemon_on_the_data_dir_refuses_and_unlinks_nothing(hardhat: OnNode, tmp_path: Path) -> None:
    config = node_config(tmp_path, hardhat.node.url, hardhat.address)
    async with daemon_with(config) as daemon:
        await wait_readiness(daemon, ready=True)
        index = index_path(config)
        size = index.stat().st_size
        with pytest.raises(DataDirLocked, match="in use by another perpstream process"):
            await run_daemon(config)
        embedded = node_config(tmp_path, hardhat.node.url, hardhat.address, source="embedded")
        (tmp_path / "embedded-chain.sqlite3").write_bytes(b"kept")
        with pytest.raises(DataDirLocked):
            await run_daemon(embedded)  # the embedded source deletes its index file first: not this time
        assert (tmp_path / "embedded-chain.sqlite3").read_bytes() == b"kept"
        assert index.stat().st_size >= size
        await wait_readiness(daemon, ready=True)
    assert await trio.to_thread.run_sync(main, ["reindex", "--config", "/dev/null"]) == 0


async def test_every_indexer_incarnation_shares_the_daemons_one_http_client(tmp_path: Path) -> None:
    config = node_config(tmp_path, "http://127.0.0.1:1/", "0x" + "11" * 20)
    async with open_sources(config, WallClock()) as sources:
        [spec] = [c for c in sources.chain if c.name == "indexer"]
        clients = [spec.factory()._client() for _ in range(3)]  # three incarnations' clients
        shared = {id(c._http) for c in clients}
        http = clients[0]._http
        assert len(shared) == 1 and not http.is_closed
        for client in clients:
            await client.aclose()  # an incarnation ending leaves the daemon's client open
        assert not http.is_closed
    assert http.is_closed  # ... until the daemon ends


def test_httpx_requests_are_not_logged_at_info() -> None:
    import logging

    from perpstream.logs import configure_logging

    configure_logging("info")
    for name in ("httpx", "httpcore"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
