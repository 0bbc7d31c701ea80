"""Child processes the harness starts, and reading their output line by line.

Every child gets its own session (process group), so a Ctrl-C in the
terminal reaches only the harness, which then stops its children in order:
clients first, servers after. :func:`stop` ends the child's whole group —
gently, then by force — and is safe to call on a process that already died.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import trio

__all__ = ["LineReader", "raise_file_limit", "spawn", "stop", "tail"]


def raise_file_limit() -> int:
    """As many descriptors as allowed, for this process and the children it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def spawn(
    command: Sequence[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    pipes: bool = False,
) -> trio.Process:
    """Start ``command`` in its own session, its stderr (and stdout unless ``pipes``) to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    output: IO[bytes] = open(log, "ab")
    try:
        return await trio.lowlevel.open_process(
            list(command),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else output,
            stderr=output,
            start_new_session=True,
        )
    finally:
        output.close()  # the child holds its own copy


def _signal_group(process: trio.Process, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


async def stop(process: trio.Process, *, grace: float = 10.0) -> None:
    """SIGTERM the child's group, wait up to ``grace`` seconds, then SIGKILL it.

    Shielded: it must finish even while the harness is being cancelled.
    """
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            _signal_group(process, signal.SIGTERM)
            with trio.move_on_after(grace):
                await process.wait()
        # The group may outlive its leader (a worker it forked): kill it all.
        _signal_group(process, signal.SIGKILL)
        with trio.move_on_after(5):
            await process.wait()


def tail(log: Path, lines: int = 20) -> str:
    """The end of a child's log, for an error message."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LineReader:
    """JSON objects from a child's stdout, one per line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> dict[str, Any] | None:
        """The next object, or ``None`` at end of output."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if line.strip():
                    return json.loads(line)  # type: ignore[no-any-return]
                continue
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk
