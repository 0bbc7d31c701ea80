from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio

from perpstream.devchain import Deployment, DevChain

from .hardhat_node import REQUIRE_ENV, HardhatNode, deploy_exchange, exchange_at, hardhat_unavailable, install_hardhat


@pytest.fixture
async def chain() -> DevChain:
    """A fresh embedded chain with the exchange deployed (real eth-tester)."""
    return await DevChain.start(traders=6)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "chain-index.sqlite3"


@attrs.define
class NodeSession:
    """The session's Hardhat node, the exchange on it, and the snapshot tests start from."""

    node: HardhatNode
    deployment: Deployment
    base: str


@attrs.define
class OnNode:
    """What a real-node test gets: the node's controls and the deployed exchange."""

    node: HardhatNode
    exchange: DevChain

    @property
    def address(self) -> str:
        return self.exchange.address


@pytest.fixture(scope="session")
def hardhat_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSession]:
    """One ``hardhat node`` process for the whole session (see tests/chain/hardhat_node.py)."""
    reason = hardhat_unavailable()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    node = HardhatNode(install_hardhat(), tmp_path_factory.mktemp("hardhat") / "node.log")
    try:
        deployment = deploy_exchange(node)
        yield NodeSession(node, deployment, base=str(node.call("evm_snapshot")))
    finally:
        node.stop()


@pytest.fixture
async def hardhat(hardhat_session: NodeSession) -> OnNode:
    """The node as the session deployed it: back to the base snapshot, or reset and
    deployed again when a test reset the chain (a reset forgets every snapshot)."""
    session = hardhat_session
    node = session.node
    if not await node.revert(session.base):
        await node.reset()
        session.deployment = await trio.to_thread.run_sync(deploy_exchange, node)
    session.base = await node.snapshot()
    return OnNode(node, exchange_at(node, session.deployment))
