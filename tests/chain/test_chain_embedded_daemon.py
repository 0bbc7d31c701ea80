"""The embedded default, as the daemon wires it: demo trades priced by the oracle.

Real time and real sockets: the daemon runs in this trio run with its
configured sources (the simulated feed wrapped in the signing feed, the
embedded chain and its demo bots). The demo trader transacts only with an
update the signing feed signed for the running chain, so a trade on the
positions stream shows the whole path works.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from perpstream.config import parse_config
from perpstream.devchain import DevChain
from tests.reliability.clients import daemon_with

pytestmark = pytest.mark.e2e


async def test_the_demo_trader_trades_with_the_signing_feeds_updates(tmp_path: Path) -> None:
    trader = (await DevChain.start(traders=1)).traders[0]  # the same mnemonic: the daemon's first trader
    config = parse_config({
        "server": {"data_dir": str(tmp_path)},
        "chain": {"demo": {"accounts": 1, "trade_interval_ms": 100}},
    })
    async with daemon_with(config) as daemon, trio.open_nursery() as clients:
        positions = await daemon.listen(clients, f"/api/v1/ws/positions/{trader}")
        # on the trader's own stream: the contract took the price the trader sent
        opened = await positions.wait_until(lambda m: m["type"] == "position_opened", timeout=60)
        assert opened["market_id"] in {m.id for m in config.markets}
        clients.cancel_scope.cancel()
