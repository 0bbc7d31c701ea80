"""Abuse limits and HTTP answers against the real daemon on real loopback sockets."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from tests.e2e.daemon import Daemon, e2e_config, receive_json, running_daemon

PRICES = "/api/v1/ws/prices/btc-usdc-perp"


async def _refused_with_4429(daemon: Daemon, headers: list[tuple[str, str]] | None = None) -> dict[str, object]:
    """Open one connection over the limit: its ``error`` (the close must be 4429)."""
    async with open_websocket_url(daemon.ws(PRICES), extra_headers=headers or []) as ws:
        error = await receive_json(ws)
        with pytest.raises(ConnectionClosed) as closed:
            await receive_json(ws)
        assert closed.value.reason.code == 4429
    return error


async def test_an_address_over_its_limits_is_refused_then_cooled_down_with_http_429(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = e2e_config(tmp_path, ws={"max_connections_per_client": 2},
                        limits={"strikes_before_cooldown": 2, "strike_window_s": 60.0, "cooldown_s": 30.0})
    async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.http) as http:
        async with open_websocket_url(daemon.ws(PRICES)) as a, open_websocket_url(daemon.ws(PRICES)) as b:
            for ws in (a, b):
                assert (await receive_json(ws))["type"] == "connected"
            first = await _refused_with_4429(daemon)
            assert first["type"] == "error" and first["code"] == "too_many_connections"
            assert first["retry_after_s"] == 60.0  # retrying at this pace never earns a cooldown
            second = await _refused_with_4429(daemon)
            assert second["retry_after_s"] == 30.0  # the strike that earned the cooldown says so
            # Cooling down: refused at the handshake, with no WebSocket at all.
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(daemon.ws("/api/v1/ws")):
                    pass
            assert rejected.value.status_code == 429
            headers = dict(rejected.value.headers or [])
            assert 25 <= int(headers[b"retry-after"]) <= 30
            assert json.loads(rejected.value.body or b"{}")["error"]["code"] == "cooling_down"
            # The connections it already has keep streaming; REST is unaffected.
            assert (await receive_json(a))["type"] in ("price_update", "resync")
            assert (await http.get("/healthz")).status_code == 200
            metrics = (await http.get("/metrics")).text
            assert 'perpstream_ws_limit_refusals_total{code="cooling_down"} 1.0' in metrics
            assert 'perpstream_ws_limit_refusals_total{code="too_many_connections"} 2.0' in metrics
            assert "127.0.0.1" not in metrics
    cooling = [r for r in caplog.records if "cooling down" in r.getMessage()]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in cooling] == [
        ("WARNING", "cooling down 127.0.0.1 for 30 s")]  # once, not per refusal


async def test_forwarded_for_names_the_client_only_behind_a_trusted_proxy(tmp_path: Path) -> None:
    config = e2e_config(tmp_path, ws={"max_connections_per_client": 1},
                        limits={"trusted_proxies": ["127.0.0.0/8"], "cooldown_s": 0.0})
    async with running_daemon(config) as daemon:
        # Behind the (trusted) loopback proxy, two clients are two addresses, each with one connection.
        alice = [("X-Forwarded-For", "203.0.113.1")]
        bob = [("X-Forwarded-For", "198.51.100.2, 203.0.113.2")]  # the rightmost untrusted hop is the client
        async with open_websocket_url(daemon.ws(PRICES), extra_headers=alice) as a, \
                open_websocket_url(daemon.ws(PRICES), extra_headers=bob) as b:
            for ws in (a, b):
                assert (await receive_json(ws))["type"] == "connected"
            assert (await _refused_with_4429(daemon, alice))["code"] == "too_many_connections"
            # A spoofed left-hand entry does not buy Bob a new address.
            spoofed = [("X-Forwarded-For", "192.0.2.99, 203.0.113.2")]
            assert (await _refused_with_4429(daemon, spoofed))["code"] == "too_many_connections"


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(tmp_path: Path) -> None:
    config = e2e_config(tmp_path, ws={"max_connections_per_client": 1}, limits={"cooldown_s": 0.0})
    async with running_daemon(config) as daemon:
        async with open_websocket_url(daemon.ws(PRICES), extra_headers=[("X-Forwarded-For", "203.0.113.1")]) as a:
            assert (await receive_json(a))["type"] == "connected"
            other = [("X-Forwarded-For", "203.0.113.77")]
            assert (await _refused_with_4429(daemon, other))["code"] == "too_many_connections"


async def test_http_errors_speak_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPSTREAM_DEBUG_TOKEN", "s3cret")
    config = e2e_config(tmp_path, metrics={"access": "debug"})
    async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.http) as http:
        missing = await http.get("/no/such/route")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
        assert missing.json()["error"]["code"] == "not_found"
        wrong_method = await http.delete("/api/v1/markets")
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
        assert "GET" in wrong_method.headers.get("allow", "")
        bad_limit = await http.get("/api/v1/positions", params={"limit": "0"})
        assert bad_limit.json()["error"]["message"] == "limit must be an integer from 1 to 1000, got '0'"
        junk = await http.get("/api/v1/positions", params={"after": "not-a-cursor"})
        assert junk.status_code == 400 and "after must be a position id" in junk.json()["error"]["message"]
        page = await http.get("/api/v1/positions", params={"after": "0x" + "0" * 64, "limit": 1})
        assert page.status_code == 200
        assert (await http.get("/debug/actors")).json()["error"]["message"] == "bearer token required"
        wrong = await http.get("/debug/actors", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "wrong token"
        # metrics.access = "debug": /metrics follows the /debug rule.
        assert (await http.get("/metrics")).status_code == 401
        scraped = await http.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert scraped.status_code == 200 and "perpstream_http_request_seconds_bucket" in scraped.text
        assert 'route="unmatched"' in scraped.text and "/no/such/route" not in scraped.text


async def test_metrics_hide_the_accounts_being_watched(tmp_path: Path) -> None:
    account = "0x" + "ab" * 20
    async with running_daemon(e2e_config(tmp_path)) as daemon, httpx.AsyncClient(base_url=daemon.http) as http:
        async with open_websocket_url(daemon.ws(f"/api/v1/ws/positions/{account}")) as ws:
            assert (await receive_json(ws))["type"] == "connected"
            with trio.fail_after(10):
                while "perpstream_sessions 1.0" not in (text := (await http.get("/metrics")).text):
                    await trio.sleep(0.05)
    assert account not in text.lower() and "sessions/0x" not in text
    assert 'perpstream_ws_subscriptions{channel="positions"} 1.0' in text
    assert "perpstream_actor_restarts_total{" in text and "# TYPE perpstream_actor_restarts_total counter" in text
    assert "perpstream_indexer_events_applied_total" in text
