"""``perpstream serve --role edge --workers N``: N edge processes on one port.

An edge is one Python process, so one core of the machine; N of them share
the port with ``SO_REUSEPORT`` and the kernel spreads new connections
across them. This parent starts them, starts again one that dies (after a
pause, with the service's backoff), and on SIGTERM/SIGINT passes the
signal on and waits for them all: each says goodbye to its own clients.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

import trio

from perpstream.backoff import Backoff

__all__ = ["WORKER_ENV", "run_workers"]

log = logging.getLogger("perpstream.workers")

#: Set in each worker's environment (its number): it binds with ``SO_REUSEPORT``.
WORKER_ENV = "PERPSTREAM_WORKER"


async def _worker(number: int, argv: Sequence[str], stopping: trio.Event,
                  processes: dict[int, trio.Process]) -> None:
    backoff = Backoff(initial=0.5, maximum=10.0)
    env = {**os.environ, WORKER_ENV: str(number)}
    while not stopping.is_set():
        # A session of its own: a Ctrl-C on the terminal reaches this parent
        # only, which passes it on once (a second one would stop a worker at once).
        process = await trio.lowlevel.open_process([sys.executable, "-m", "perpstream", *argv], env=env,
                                                   stdin=subprocess.DEVNULL, start_new_session=True)
        processes[number] = process
        code = await process.wait()
        if stopping.is_set():
            return
        log.warning("edge worker %d (pid %d) exited with %s; starting it again", number, process.pid, code)
        await trio.sleep(backoff.next_delay())


async def _run(count: int, argv: Sequence[str]) -> int:
    stopping = trio.Event()
    processes: dict[int, trio.Process] = {}
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def pass_signals_on() -> None:
            async for signum in signals:
                stopping.set()
                for process in processes.values():
                    if process.returncode is None:
                        process.send_signal(signum)

        async with trio.open_nursery() as outer:
            outer.start_soon(pass_signals_on)
            async with trio.open_nursery() as workers:
                for number in range(1, count + 1):
                    workers.start_soon(_worker, number, argv, stopping, processes)
                log.info("started %d edge workers", count)
            outer.cancel_scope.cancel()
    return 0 if all(p.returncode == 0 for p in processes.values()) else 1


def run_workers(count: int, argv: Sequence[str]) -> int:
    """Run ``count`` workers of ``perpstream <argv>`` (a ``serve --role edge`` command line without ``--workers``)."""
    return trio.run(_run, count, argv)
