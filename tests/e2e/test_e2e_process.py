"""The daemon as a real process: start-up, graceful SIGTERM/SIGINT, a second signal."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.e2e.daemon import free_port, masked_text_frame, stalled_client

pytestmark = pytest.mark.e2e


def _start(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "perpstream", "serve", "--port", str(port), *extra],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


async def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    async with httpx.AsyncClient() as http:
        with trio.fail_after(60):
            while True:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_says_goodbye_to_clients_and_exits_zero(tmp_path: Path, signum: int) -> None:
    port = free_port()
    proc = _start(tmp_path, port, "--log-format", "json")
    try:
        await _wait_ready(proc, port)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1/ws/prices/btc-usdc-perp") as ws:
            assert json.loads(await ws.get_message())["type"] == "connected"
            started = time.monotonic()
            proc.send_signal(signum)
            goodbye = None
            with pytest.raises(ConnectionClosed) as closed:
                with trio.fail_after(15):
                    while True:
                        message = json.loads(await ws.get_message())
                        if message["type"] == "goodbye":
                            goodbye = message
            assert goodbye is not None and goodbye["reason"] == "server_shutting_down"
            assert closed.value.reason.code == 1001
        code = await trio.to_thread.run_sync(lambda: proc.wait(timeout=30))
        assert code == 0
        assert time.monotonic() - started < 30
        output = proc.stdout.read().decode() if proc.stdout else ""
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert any("shutting down gracefully" in line["message"] for line in lines)
        assert any(line["message"] == "stopped" for line in lines)
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_a_stopping_daemon_takes_no_new_connection_and_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        await _wait_ready(proc, port)
        # A client that stopped reading holds the graceful stop: its writer is
        # stuck, so the goodbye waits out the drain timeout (5 s).
        stalled = await trio.to_thread.run_sync(stalled_client, port)
        frame = masked_text_frame(json.dumps({"op": "ping", "id": "x" * 50_000}).encode())
        for _ in range(60):
            await trio.to_thread.run_sync(stalled.sendall, frame)
        await trio.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        # Signals of one kind arriving together are coalesced: let the first be read.
        await trio.sleep(0.5)
        assert proc.poll() is None, "the graceful stop should still be waiting for the stalled client"
        # Meanwhile a reconnecting client is refused, not taken on by a server about to cut it.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        proc.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(lambda: proc.wait(timeout=10))
        stalled.close()
        assert code == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "perpstream", "serve", "--port", str(port)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
