"""The systemd unit in deploy/, and the readiness notification it relies on, for real."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from perpstream.cli import SHUTDOWN_DEADLINE_S
from perpstream.systemd import notify
from tests.e2e.daemon import free_port

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "perpstream.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_restarts_on_failure_stops_with_sigterm_and_notifies_readiness() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a config mistake is not restarted into a storm
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > SHUTDOWN_DEADLINE_S  # the graceful stop fits before SIGKILL
    assert " serve --config " in service["ExecStart"]
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this checkout's command.
    executable = Path(sys.executable).with_name("perpstream")
    text = UNIT.read_text().replace("/opt/perpstream/.venv/bin/perpstream", str(executable))
    copy = tmp_path / "perpstream.service"
    copy.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if "perpstream.service" in line]
    assert done.returncode == 0 and not problems, done.stderr


def _listen(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(60)
    return sock


def test_notify_sends_one_datagram_and_is_silent_outside_systemd(tmp_path: Path) -> None:
    with _listen(tmp_path) as manager:
        assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert manager.recv(4096) == b"READY=1"
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})  # logged, never raised


def test_serve_says_ready_once_listening_and_stopping_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    with _listen(tmp_path) as manager:
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
        proc = subprocess.Popen([sys.executable, "-m", "perpstream", "serve", "--port", str(port)], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            ready = manager.recv(4096).decode()
            assert ready.startswith("READY=1\nSTATUS=serving ") and str(port) in ready
            with socket.create_connection(("127.0.0.1", port), timeout=10):
                pass  # READY=1 means the port is bound: a connection succeeds at once
            proc.send_signal(signal.SIGTERM)
            assert manager.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
