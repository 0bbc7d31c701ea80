"""Drive the Node load-generator workers (``bench/loadgen/loadgen.js``).

The clients are split evenly over a few worker processes (Node is single
threaded; more workers than cores only adds switching). The harness tells
every worker the same command and waits for each one's answer, so a window
starts and ends at the same moment for all clients, give or take the
stdin round trip (well under a millisecond).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from .procs import LineReader, spawn, stop, tail
from .stats import Window, merge_reports

__all__ = ["LOADGEN_DIR", "LoadGen", "LoadGenError", "ensure_installed"]

LOADGEN_DIR = Path(__file__).resolve().parent.parent / "loadgen"


class LoadGenError(RuntimeError):
    pass


def ensure_installed() -> str:
    """The ``node`` executable, after ``npm ci`` on first use."""
    node = shutil.which("node")
    if node is None:
        raise LoadGenError("node is not installed (the load generator needs Node.js >= 18)")
    if not (LOADGEN_DIR / "node_modules" / "ws").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise LoadGenError("npm is not installed; cannot install the load generator's dependencies")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=LOADGEN_DIR, check=True)
    return node


@attrs.define
class _Worker:
    process: trio.Process
    reader: LineReader
    log: Path

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all((json.dumps(command) + "\n").encode())

    async def expect_any(self, events: tuple[str, ...]) -> dict[str, Any]:
        message = await self.reader.next()
        if message is None:
            raise LoadGenError(f"load generator exited; its log ends with:\n{tail(self.log)}")
        if message.get("event") not in events:
            raise LoadGenError(f"load generator: unexpected {message!r}")
        return message

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        with trio.move_on_after(timeout):
            while True:
                message = await self.reader.next()
                if message is None:
                    raise LoadGenError(f"load generator exited; its log ends with:\n{tail(self.log)}")
                if message.get("event") == event:
                    return message
                if message.get("event") == "error":
                    raise LoadGenError(f"load generator: {message.get('message')}")
        raise LoadGenError(f"load generator: no {event!r} within {timeout:.0f} s")


@attrs.frozen
class Ready:
    connected: int
    failed: int
    seconds: float
    gave_up: bool  # the server stopped accepting; the rest were abandoned


class LoadGen:
    """N clients over a few Node workers; every method talks to all workers at once."""

    def __init__(self, workers: list[_Worker]) -> None:
        self._workers = workers

    @classmethod
    async def start(
        cls,
        *,
        node: str,
        base: str,
        paths: list[str],
        clients: int,
        workers: int,
        concurrency: int,
        deflate: bool,
        log_dir: Path,
        label: str,
        options: Mapping[str, Any] | None = None,
    ) -> LoadGen:
        """``options``: more of a worker's config (``measureType``, ``snapshotTypes``, ``witness``)."""
        started: list[_Worker] = []
        workers = max(1, min(workers, clients))
        first = 0
        try:
            for i in range(workers):
                count = clients // workers + (1 if i < clients % workers else 0)
                config = {"base": base, "paths": paths, "first": first, "count": count,
                          "concurrency": concurrency, "deflate": deflate, **(options or {})}
                first += count
                log = log_dir / f"{label}-loadgen{i}.log"
                process = await spawn([node, str(LOADGEN_DIR / "loadgen.js"), json.dumps(config)],
                                      log=log, pipes=True)
                assert process.stdout is not None
                started.append(_Worker(process, LineReader(process.stdout), log))
        except BaseException:
            for worker in started:
                await stop(worker.process, grace=1)
            raise
        return cls(started)

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    async def _all(self, command: dict[str, Any] | None, event: str, timeout: float) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = [{} for _ in self._workers]

        async def one(i: int, worker: _Worker) -> None:
            if command is not None:
                await worker.send(command)
            answers[i] = await worker.expect(event, timeout)

        async with trio.open_nursery() as nursery:
            for i, worker in enumerate(self._workers):
                nursery.start_soon(one, i, worker)
        return answers

    async def ready(self, *, stalled_after: float, limit: float) -> Ready:
        """Wait until every client has connected or given up.

        A server that stops accepting does not hold the run hostage: once no
        worker has made progress for ``stalled_after`` seconds, or after
        ``limit`` seconds in all, the pending handshakes are abandoned and the
        phase goes on with the clients that did connect.
        """
        answers: list[dict[str, Any]] = [{} for _ in self._workers]
        progress_at = trio.current_time()
        deadline = progress_at + limit
        counts = [0 for _ in self._workers]

        async def one(i: int, worker: _Worker) -> None:
            nonlocal progress_at
            while True:
                message = await worker.expect_any(("progress", "ready"))
                done = message["connected"] + message["failed"]
                if done > counts[i]:
                    counts[i] = done
                    progress_at = trio.current_time()
                if message["event"] == "ready":
                    answers[i] = message
                    return

        gave_up = False

        async def give_up_when_stuck() -> None:
            nonlocal gave_up
            while trio.current_time() < min(deadline, progress_at + stalled_after):
                await trio.sleep(1)
            gave_up = True
            for worker in self._workers:
                await worker.send({"cmd": "give_up"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(give_up_when_stuck)
            async with trio.open_nursery() as waiting:
                for i, worker in enumerate(self._workers):
                    waiting.start_soon(one, i, worker)
            nursery.cancel_scope.cancel()
        return Ready(sum(a["connected"] for a in answers), sum(a["failed"] for a in answers),
                     max(a["ms"] for a in answers) / 1000, gave_up=gave_up)

    async def reset(self) -> None:
        """Start a new measurement window."""
        await self._all({"cmd": "reset"}, "reset", 30)

    async def report(self) -> Window:
        """Everything the clients saw since the last reset."""
        return merge_reports(await self.reports())

    async def reports(self) -> list[dict[str, Any]]:
        """Every worker's own report, to merge with those of another group of clients."""
        return await self._all({"cmd": "report"}, "report", 60)

    async def stall(self, every: int) -> int:
        """Clients whose global index is a multiple of ``every`` stop reading; how many did."""
        answers = await self._all({"cmd": "stall", "every": every}, "stalled", 30)
        return sum(a["count"] for a in answers)

    async def unstall(self, wait_ms: int) -> dict[str, int]:
        """Let the stalled clients read again; how many find their connection already cut."""
        answers = await self._all({"cmd": "unstall", "wait_ms": wait_ms}, "unstalled", 30 + wait_ms / 1000)
        return {key: sum(a[key] for a in answers) for key in ("stalled", "cut", "still_open")}

    async def witness(self) -> list[dict[str, Any]]:
        """Each worker's witnesses: per path, the events its first client saw (``witness`` option)."""
        return [a["paths"] for a in await self._all({"cmd": "witness"}, "witness", 60)]

    async def drop(self) -> int:
        """Every client resets its socket (RST), keeping where its stream got to; how many did."""
        return sum(a["count"] for a in await self._all({"cmd": "drop"}, "dropped", 30))

    async def resume(self, timeout_s: float, *, since: bool = True) -> dict[str, int]:
        """The dropped clients reconnect at once (with ``since``, or plainly); returns once each is live or failed."""
        command = {"cmd": "resume", "timeout_ms": int(timeout_s * 1000), "since": since}
        answers = await self._all(command, "resumed", timeout_s + 30)
        return {"clients": sum(a["clients"] for a in answers), "live": sum(a["live"] for a in answers)}

    async def resume_report(self) -> list[dict[str, Any]]:
        """Every resumed client's timeline and the events it received since."""
        answers = await self._all({"cmd": "resume_report"}, "resume_report", 60)
        return [client for a in answers for client in a["clients"]]

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            for worker in self._workers:
                if worker.process.returncode is None:
                    try:
                        await worker.send({"cmd": "quit"})
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
            for worker in self._workers:
                await stop(worker.process, grace=5)
