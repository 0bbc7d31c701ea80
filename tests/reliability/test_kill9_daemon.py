"""``kill -9`` of the daemon in the middle of indexing, then a restart.

The whole daemon as a process (``perpstream serve``) indexing a real chain
over JSON-RPC (a slowed-down loopback node, so the kill lands mid-way).
The indexer process alone is killed in ``tests/chain/test_chain_crash``;
here it is the service: the state it serves after the restart must equal
that of a run that was never killed, and a client that reconnects and
dedupes on event ids must never have been handed two different events
under one id.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from perpstream.chain import Cursor, PositionStore
from perpstream.devchain import DevChain
from tests.chain.test_chain_crash import make_history, reference_run

from .clients import Listener
from .daemon_process import DaemonProcess
from .faulty_rpc import FaultyRpcNode

pytestmark = pytest.mark.e2e


def settings(tmp_path: Path, node: FaultyRpcNode, chain: DevChain) -> dict[str, Any]:
    return {
        "server": {"data_dir": str(tmp_path / "data")},
        "chain": {"source": "rpc", "rpc_url": node.url, "contract_address": chain.address,
                  "confirmations": 2, "poll_interval_ms": 50, "max_block_range": 2},
        "streams": {"positions_interval_ms": 250},
        "ws": {"ping_interval_s": 1.0},
    }


def without_delivery_fields(message: dict[str, Any]) -> dict[str, Any]:
    """An event as a client keeps it: minus what is per delivery (seq, ts) or priced now."""
    return {k: v for k, v in message.items() if k not in ("seq", "ts")}


def index_cursor(db: Path) -> Cursor | None:
    """The daemon's durable cursor, read as another process would."""
    if not db.exists():
        return None
    reader = PositionStore(db)
    try:
        return reader.cursor()
    finally:
        reader.close()


async def connect(nursery: trio.Nursery, url: str) -> Listener:
    listener = Listener(url)
    await nursery.start(listener.run)
    return listener


async def test_kill_9_mid_indexing_then_restart(tmp_path: Path) -> None:
    chain = await DevChain.start(traders=6)
    await make_history(chain, 5)
    await chain.mine(3)
    head = await chain.block_number()
    _, expected = await reference_run(chain, tmp_path / "reference.sqlite3", max_block_range=2)
    trader = chain.traders[0]
    db = tmp_path / "data" / "chain-index.sqlite3"

    node = FaultyRpcNode(chain)
    node.delay_s = 0.02  # a slow node: indexing takes seconds, the kill lands mid-way
    daemon = DaemonProcess(tmp_path, settings(tmp_path, node, chain))
    try:
        async with trio.open_nursery() as nursery:
            await node.up(nursery)
            await daemon.start()
            first = await connect(nursery, daemon.ws(f"/api/v1/ws/positions/{trader}"))
            with trio.fail_after(30):
                while (cursor := index_cursor(db)) is None or cursor.block_number < head // 3:
                    await trio.sleep(0.01)
            daemon.kill()
            killed_at = cursor.block_number
            assert killed_at < head
            with trio.fail_after(10):
                while first.close_code is None:
                    await trio.sleep(0.05)

            await daemon.start()
            second = await connect(nursery, daemon.ws(f"/api/v1/ws/positions/{trader}"))
            with trio.fail_after(60):
                while index_cursor(db).block_number < head \
                        or (await daemon.get("/readyz")).status_code != 200:  # type: ignore[union-attr]
                    await trio.sleep(0.1)
            served = (await daemon.get("/api/v1/positions?limit=1000")).json()
            await second.next("positions_update")
            latest = await second.next("positions_update")
            assert await daemon.stop() == 0
            nursery.cancel_scope.cancel()
    finally:
        daemon.ensure_stopped()

    # The same state as a run that was never killed: in the index and as served.
    reader = PositionStore(db)
    assert reader.cursor() is not None and reader.cursor().block_number == head  # type: ignore[union-attr]
    assert reader.snapshot() == expected
    reader.close()
    assert sorted((p["position_id"], Decimal(p["size"]), Decimal(p["collateral"])) for p in served["positions"]) \
        == sorted((p.position_id, p.size, p.collateral) for p in expected.positions)
    assert sorted(p["position_id"] for p in latest["positions"]) == sorted(
        p.position_id for p in expected.positions if p.account == trader)

    # A client that dedupes on (tx_hash, log_index, finality) is safe to do so:
    # every copy under one id is the same event.
    copies: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for listener in (first, second):
        for _, message in listener.frames:
            if "event" in message and isinstance(message["event"], dict):
                ref = message["event"]
                copies[(ref["tx_hash"], ref["log_index"], message["finality"])].append(message)
    assert copies, "the client saw no events"
    for key, same in copies.items():
        assert all(without_delivery_fields(m) == without_delivery_fields(same[0]) for m in same), key
    # Within one connection nothing is delivered twice; a repeat can only span the kill.
    for listener in (first, second):
        ids = [(m["event"]["tx_hash"], m["event"]["log_index"], m["finality"])
               for _, m in listener.frames if isinstance(m.get("event"), dict)]
        assert len(ids) == len(set(ids))
    # And every id names a real event of this account on chain.
    logs = {(log.tx_hash, log.log_index) for log in await chain.client().get_logs(0, head, chain.address)}
    assert {(tx, index) for tx, index, _ in copies} <= logs
    errors = [e for e in daemon.log_entries() if e.get("level") in ("error", "critical")]
    assert not errors, errors
