"""End to end: the real daemon (hypercorn, the actor tree, the embedded chain)
and real WebSocket clients (trio-websocket) on loopback sockets."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.e2e.daemon import (
    e2e_config,
    masked_text_frame,
    receive_json,
    receive_until,
    running_daemon,
    stalled_client,
    websocket,
)

pytestmark = pytest.mark.e2e

TRADER = "0x" + "00" * 20  # replaced by a real demo account in the tests that need one


async def test_every_path_connects_with_a_snapshot_and_bad_parameters_are_refused(tmp_path: Path) -> None:
    async with running_daemon(e2e_config(tmp_path)) as daemon:
        async with httpx.AsyncClient(base_url=daemon.http) as http:
            # Wait for the demo traders to open a position, to watch a real account.
            with trio.fail_after(30):
                while not (positions := (await http.get("/api/v1/positions")).json()["positions"]):
                    await trio.sleep(0.3)
            trader = positions[0]["user_address"]
        paths = {
            "/api/v1/ws/prices/BTC-USDC-PERP": "price_update",
            "/api/v1/ws/market-stats/eth-usdc-perp": "market_stats",
            f"/api/v1/ws/positions/{trader.lower()}": "positions_update",
            "/api/v1/ws/liquidations": "liquidation_alert",
        }
        for path, snapshot_type in paths.items():
            async with websocket(daemon, path) as ws:
                connected = await receive_json(ws)
                snapshot = await receive_json(ws)
                assert (connected["type"], connected["seq"]) == ("connected", 1), path
                assert (snapshot["type"], snapshot["seq"]) == (snapshot_type, 2), path
        async with websocket(daemon, f"/api/v1/ws/positions/{trader}") as ws:
            snapshot = await receive_until(ws, "positions_update")
            assert snapshot["user_address"] == trader
            assert any(p["position_id"] == positions[0]["position_id"] for p in snapshot["positions"])

        for path, code, close_code in [
            ("/api/v1/ws/prices/doge-usdc-perp", "unknown_market", 4404),
            ("/api/v1/ws/market-stats/" + "x" * 5000, "unknown_market", 4404),
            ("/api/v1/ws/positions/0x1234", "invalid_address", 4400),
            ("/api/v1/ws/positions/0x" + "aB" * 20, "invalid_address", 4400),  # bad EIP-55 checksum
        ]:
            async with websocket(daemon, path) as ws:
                error = await receive_json(ws)
                assert (error["type"], error["code"]) == ("error", code)
                with pytest.raises(ConnectionClosed) as closed:
                    await receive_json(ws)
                assert closed.value.reason.code == close_code

        async with websocket(daemon, "/api/v1/ws") as ws:
            await ws.send_message("{oops")
            await ws.send_message(b"\x01\x02")
            await ws.send_message(json.dumps({"op": "subscribe", "channel": "prices", "market_id": "sol-usdc-perp", "id": 1}))
            codes = [(await receive_json(ws)).get("code") for _ in range(2)]
            assert codes == ["malformed_json", "binary_frame"]
            ack = await receive_json(ws)
            assert (ack["type"], ack["id"]) == ("subscribed", 1)
            assert (await receive_json(ws))["type"] == "connected"
            await ws.send_message("[]")
            await receive_until(ws, "error")
            with pytest.raises(ConnectionClosed) as closed:
                await receive_until(ws, "never")
            assert closed.value.reason.code == 1008


async def test_a_client_that_stops_reading_is_cut_off_while_others_keep_their_cadence(tmp_path: Path) -> None:
    config = e2e_config(tmp_path, ws={"send_timeout_s": 2.0, "ping_interval_s": 1.0})
    async with running_daemon(config) as daemon:
        async with websocket(daemon, "/api/v1/ws/prices/btc-usdc-perp") as healthy:
            await receive_json(healthy)
            stalled = await trio.to_thread.run_sync(stalled_client, daemon.port)
            # Large pongs (the id is echoed) fill the stalled client's TCP window fast.
            big_id = "x" * 50_000
            frame = masked_text_frame(json.dumps({"op": "ping", "id": big_id}).encode())
            for _ in range(60):
                await trio.to_thread.run_sync(stalled.sendall, frame)
            started = trio.current_time()
            arrivals = []
            cut = None
            async with httpx.AsyncClient(base_url=daemon.http) as http:
                while trio.current_time() - started < (8 if cut is None else cut + 1.5):
                    message = await receive_json(healthy, timeout=2)
                    if message["type"] == "price_update":
                        arrivals.append(trio.current_time())
                    tree = (await http.get("/debug/actors")).json()
                    if cut is None and tree["connections"]["cut_slow"] == 1:
                        cut = trio.current_time() - started
            stalled.close()
            assert cut is not None, "the stalled client was never cut off"
            assert cut < 2.0 + 2.0  # send_timeout plus the guard's sweep period and slack
            gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
            assert max(gaps) < 1.0, f"healthy client slowed down: {gaps}"


async def test_debug_restart_gives_resync_and_the_token_guards_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPSTREAM_DEBUG_TOKEN", "s3cret")
    async with running_daemon(e2e_config(tmp_path)) as daemon:
        async with httpx.AsyncClient(base_url=daemon.http) as http:
            assert (await http.get("/debug/actors")).status_code == 401
            assert (await http.post("/debug/actors/markets/btc-usdc-perp/restart")).status_code == 401
            auth = {"Authorization": "Bearer s3cret"}
            assert (await http.get("/debug/actors?format=text", headers=auth)).text.startswith("root [Supervisor]")
            async with websocket(daemon, "/api/v1/ws/prices/btc-usdc-perp") as ws:
                await receive_until(ws, "price_update")
                response = await http.post("/debug/actors/markets/btc-usdc-perp/restart", headers=auth)
                assert response.status_code == 202
                resync = await receive_until(ws, "resync")
                after = await receive_until(ws, "price_update")
                assert after["seq"] > resync["seq"]
            tree = (await http.get("/debug/actors", headers=auth)).json()
            assert "markets/btc-usdc-perp" in json.dumps(tree)
            assert (await http.get("/readyz")).status_code in (200, 503)
            metrics = (await http.get("/metrics")).text
            assert 'perpstream_actor_restarts_total{actor="markets/btc-usdc-perp"} 1.0' in metrics
