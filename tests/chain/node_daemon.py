"""The daemon (in this trio run, real sockets) indexing Hardhat's node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from perpstream.config import Config, parse_config
from tests.reliability.clients import RunningDaemon

__all__ = ["node_config", "readiness", "wait_readiness", "indexer_actor"]


def node_config(data_dir: Path, rpc_url: str, contract_address: str, **chain: Any) -> Config:
    """A daemon on the simulated feed indexing ``contract_address`` through ``rpc_url``."""
    return parse_config({
        "server": {"data_dir": str(data_dir)},
        "chain": {"source": "rpc", "rpc_url": rpc_url, "contract_address": contract_address,
                  "confirmations": 3, "poll_interval_ms": 50, "rpc_timeout_s": 5.0, **chain},
        "streams": {"prices_interval_ms": 250, "positions_interval_ms": 250},
    })


async def readiness(daemon: RunningDaemon) -> tuple[int, list[str]]:
    response = await daemon.get("/readyz")
    return response.status_code, response.json().get("reasons", [])


async def wait_readiness(daemon: RunningDaemon, wanted: str = "", *, ready: bool = False,
                         timeout: float = 20.0) -> list[str]:
    """Poll /readyz until it is ready (``ready``) or names ``wanted`` among its reasons."""
    with trio.fail_after(timeout):
        while True:
            status, reasons = await readiness(daemon)
            if (ready and status == 200) or (not ready and status == 503 and wanted in " ".join(reasons)):
                return reasons
            await trio.sleep(0.05)


async def indexer_actor(daemon: RunningDaemon) -> dict[str, Any]:
    tree = (await daemon.get("/debug/actors")).json()
    chain = next(c for c in tree["root"]["children"] if c["name"] == "chain")
    return next(c for c in chain["children"] if c["name"] == "indexer")  # type: ignore[no-any-return]
