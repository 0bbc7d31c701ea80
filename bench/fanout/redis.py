"""The cluster's Redis: ``redis-server`` on a free loopback port, in a scratch directory.

Without persistence: the bench measures the bus hop, not a disk's fsync.
Started like every other child of the harness (its own session, stopped on
exit), which is why it is not the cluster tests' helper.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

from .procs import spawn, stop, tail
from .servers import ServerError, free_port

__all__ = ["Redis", "start_redis"]


class Redis:
    def __init__(self, process: trio.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def pong(self) -> bool:
        """Whether it answers PING (it listens before it has loaded)."""
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except OSError:
            return False
        async with stream:
            await stream.send_all(b"PING\r\n")
            with trio.move_on_after(1):
                return (await stream.receive_some(16)).startswith(b"+PONG")
        return False

    async def stop(self) -> None:
        await stop(self.process)


async def start_redis(*, scratch: Path, log: Path) -> Redis:
    executable = shutil.which("redis-server")
    if executable is None:
        raise ServerError("no redis-server on PATH (Debian: apt-get install redis-server)")
    scratch.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = await spawn([executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(scratch),
                           "--save", "", "--appendonly", "no"], log=log)
    redis = Redis(process, port, log)
    with trio.move_on_after(15):
        while not await redis.pong():
            if process.returncode is not None:
                break
            await trio.sleep(0.05)
        else:
            return redis
    await redis.stop()
    raise ServerError(f"redis-server did not answer PING:\n{tail(log)}")
