"""A real Redis for the cluster tests: Debian's ``redis-server`` on a free port, in a temporary directory.

Started per test (a few milliseconds), with append-only persistence so a
restart keeps its data (as an operator runs it), or none for a test of a
Redis that comes back empty.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.e2e.daemon import free_port

__all__ = ["REQUIRE_ENV", "RedisServer", "redis", "redis_unavailable"]

REQUIRE_ENV = "PERPSTREAM_REQUIRE_REDIS"


def redis_unavailable() -> str | None:
    """Why the cluster tests cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "no redis-server: install Debian's package with `apt-get install redis-server` (.ci/run does)"
    return None


class RedisServer:
    def __init__(self, workdir: Path, *, persistent: bool = True) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                 "--save", "", *persistence],
                stdout=log, stderr=subprocess.STDOUT,
            )
        with trio.fail_after(10):
            while not await trio.to_thread.run_sync(self._answers):
                assert self.process.poll() is None, (self.workdir / "redis.log").read_text()[-2000:]
                await trio.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL (append-only, fsync always: nothing acknowledged is lost)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def restart(self, *, down_s: float = 0.0) -> None:
        self.kill()
        await trio.sleep(down_s)
        await self.start()

    def stop(self) -> None:
        self.kill()


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real Redis of this test's own (skipped where there is none, required in CI)."""
    reason = redis_unavailable()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        server.stop()
