"""The daemon as users run it: ``perpstream serve`` in a process of its own.

For the tests whose fault is the process itself (``kill -9``), and for
those that judge the daemon from outside — its resident memory, its open
file descriptors, its log — without the test's own clients mixed in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.e2e.daemon import free_port

Settings = Mapping[str, Mapping[str, Any]]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise TypeError(f"no TOML for {value!r}")


def to_toml(settings: Settings, prefix: str = "") -> str:
    """Nested tables of scalars as TOML (all a daemon config here needs)."""
    lines: list[str] = []
    for name, table in settings.items():
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
        lines.append(f"[{prefix}{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in scalars.items()]
        nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        if nested:
            lines.append(to_toml(nested, prefix=f"{prefix}{name}."))
    return "\n".join(lines) + "\n"


class DaemonProcess:
    """One ``perpstream serve`` process at a time, on a fixed port, logging JSON lines to a file."""

    def __init__(self, workdir: Path, settings: Settings, *, role: str = "all", extra: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.role = role
        self.extra = extra
        self.port = free_port()
        self.config = workdir / "perpstream.toml"
        self.config.write_text(to_toml(settings))
        self.log = workdir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, *, timeout: float = 60) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "perpstream", "serve", "--config", str(self.config),
                 "--port", str(self.port), "--log-format", "json", "--role", self.role, *self.extra],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            )
        async with httpx.AsyncClient(base_url=self.http) as http:
            with trio.fail_after(timeout):
                while True:
                    assert self.process.poll() is None, self.log.read_text()[-3000:]
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    async def stop(self) -> int:
        """SIGTERM and wait for the graceful exit; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await trio.to_thread.run_sync(lambda: self.process.wait(timeout=30))  # type: ignore[union-attr]

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http, timeout=10) as http:
            return await http.get(path)

    def log_entries(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (anything else the process printed is kept as ``raw``)."""
        entries = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                entries.append({"level": "raw", "message": line})
        return entries

    def rss_kib(self) -> int:
        """Resident memory, from /proc."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))
