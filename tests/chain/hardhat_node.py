"""Hardhat's node as a real, independent Ethereum node for the chain tests.

Hardhat (npm, 2.x) is installed from the registry into ``tests/chain/hardhat``
(``npm ci`` from the committed lock file, once: node_modules is not
committed) and runs as its own process, ``hardhat node --port <free port>``.
The exchange is deployed from the committed artifact by :func:`deploy_exchange`,
the one place that knows the contract's constructor.

Where Node.js or npm is missing the tests that need the node are skipped
with the reason; ``PERPSTREAM_REQUIRE_NODE=1`` (set by CI) makes that a
failure instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from web3 import Web3

from perpstream.devchain import DEFAULT_MARKET_FEEDS, DemoPublisher, Deployment, DevChain, MarketRisk
from perpstream.devchain import deploy_exchange as deploy_contracts
from tests.e2e.daemon import free_port
from tests.npm_install import npm_ci

__all__ = [
    "REQUIRE_ENV", "HardhatNode", "deploy_exchange", "exchange_at", "hardhat_unavailable", "install_hardhat",
]

HARDHAT_DIR = Path(__file__).parent / "hardhat"
REQUIRE_ENV = "PERPSTREAM_REQUIRE_NODE"
_START_TIMEOUT_S = 60.0
_INSTALL_TIMEOUT_S = 600.0
# The risk parameters the embedded chain sets for the configured markets.
MARKET_RISK = {"btc-usdc-perp": MarketRisk(), "eth-usdc-perp": MarketRisk()}


def hardhat_unavailable() -> str | None:
    """Why the Hardhat tests cannot run here, or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} not found: install Node.js (>= 18) and npm to run the tests against Hardhat's node"
    return None


def install_hardhat() -> Path:
    """The hardhat executable, running ``npm ci`` first when node_modules is missing."""
    npm_ci(HARDHAT_DIR, installed=(".bin/hardhat",), timeout=_INSTALL_TIMEOUT_S)
    return HARDHAT_DIR / "node_modules" / ".bin" / "hardhat"


class HardhatNode:
    """A ``hardhat node`` process on a free loopback port."""

    def __init__(self, executable: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._log = open(log_path, "wb")
        self._http = httpx.Client(timeout=30.0)
        env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "CI": "true"}
        self.process = subprocess.Popen(
            [str(executable), "node", "--hostname", "127.0.0.1", "--port", str(self.port)],
            cwd=HARDHAT_DIR, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        self._wait_ready(log_path)

    def _wait_ready(self, log_path: Path) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"hardhat node exited with {self.process.returncode}: {log_path.read_text()}")
            try:
                if int(self.call("eth_chainId"), 16) == 31337:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"hardhat node not answering after {_START_TIMEOUT_S} s: {log_path.read_text()}")
            time.sleep(0.05)  # polling a starting process: no event to wait on

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call (blocking); raises on a JSON-RPC error."""
        reply = self._http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                "params": list(params)}).json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def rpc(self, method: str, *params: Any) -> Any:
        """:meth:`call` off the trio thread."""
        return await trio.to_thread.run_sync(lambda: self.call(method, *params))

    # The node controls the tests use.
    async def mine(self, blocks: int = 1) -> None:
        # One evm_mine per block, not hardhat_mine: Hardhat 2.29 materializes
        # hardhat_mine's blocks lazily, and once evm_revert has crossed such a
        # run the node serves blocks whose parentHash is zero - a chain that
        # does not link, which the indexer rightly refuses to index.
        batch = [{"jsonrpc": "2.0", "id": i, "method": "evm_mine", "params": []} for i in range(blocks)]
        await trio.to_thread.run_sync(lambda: self._http.post(self.url, json=batch).raise_for_status())

    async def snapshot(self) -> str:
        return str(await self.rpc("evm_snapshot"))

    async def revert(self, snapshot_id: str) -> bool:
        return bool(await self.rpc("evm_revert", snapshot_id))

    async def reset(self) -> None:
        await self.rpc("hardhat_reset")

    async def head(self) -> int:
        return int(await self.rpc("eth_blockNumber"), 16)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._http.close()
        self._log.close()


def deploy_exchange(node: HardhatNode, *, market_risk: dict[str, MarketRisk] = MARKET_RISK) -> Deployment:
    """Deploy the demo oracle and PerpExchange from the committed artifacts as the
    embedded chain does (blocking). A reset node deployed again gets the same
    addresses: the deployer's nonces repeat."""
    w3 = _web3(node)
    owner = Web3.to_checksum_address(w3.eth.accounts[0])
    feeds = {market_id: DEFAULT_MARKET_FEEDS[market_id] for market_id in market_risk}
    return deploy_contracts(w3, deployer=owner, market_feeds=feeds, market_risk=market_risk)


def exchange_at(node: HardhatNode, deployment: Deployment) -> DevChain:
    """The deployed exchange, for sending the tests' transactions (the node's unlocked
    accounts: owner, liquidator, then traders), signing prices as the demo publisher.
    Build it inside the test's trio run."""
    w3 = _web3(node)
    accounts = [Web3.to_checksum_address(a) for a in w3.eth.accounts]
    return DevChain(w3, deployment, accounts, DemoPublisher())


def _web3(node: HardhatNode) -> Web3:
    return Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 30}))
