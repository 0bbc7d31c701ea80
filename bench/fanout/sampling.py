"""RSS, CPU time and open file descriptors of processes, read from ``/proc``.

Sampled from outside, so the figures cost the measured process nothing and
do not depend on its event loop answering. Open descriptors double as a
count of open sockets: a server that cuts a stalled client closes its socket
at once, which shows here even while the client, paused, cannot notice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import attrs
import trio

__all__ = ["Sample", "Sampler", "Usage"]

_TICKS = os.sysconf("SC_CLK_TCK")


@attrs.frozen
class Sample:
    at: float  # time.monotonic()
    cpu_s: float  # user + system, all threads, summed over the watched pids
    rss_kb: int
    fds: int


@attrs.frozen
class Usage:
    """Resource use over a stretch of samples."""

    seconds: float
    cpu_pct: float  # of one core
    rss_start_kb: int
    rss_end_kb: int
    rss_max_kb: int
    fds_end: int

    def cpu_us_per(self, messages: int) -> float | None:
        """CPU time per message: what a tick's whole burst costs, divided out (None: no messages)."""
        return round(self.cpu_pct / 100 * self.seconds * 1e6 / messages, 1) if messages else None


def _read(pid: int) -> tuple[float, int, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces; the fields after it may not.
            fields = f.read().rpartition(")")[2].split()
        utime, stime = int(fields[11]), int(fields[12])
        rss_kb = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kb = int(line.split()[1])
                    break
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return (utime + stime) / _TICKS, rss_kb, fds


def sample(pids: Sequence[int]) -> Sample:
    cpu, rss, fds = 0.0, 0, 0
    for pid in pids:
        read = _read(pid)
        if read is not None:
            cpu += read[0]
            rss += read[1]
            fds += read[2]
    return Sample(time.monotonic(), cpu, rss, fds)


class Sampler:
    """Samples a set of pids every ``period`` seconds while :meth:`run` runs."""

    def __init__(self, pids: Sequence[int], period: float = 0.5) -> None:
        self.pids = list(pids)
        self.period = period
        self.samples: list[Sample] = [sample(self.pids)]

    async def run(self) -> None:
        while True:
            await trio.sleep(self.period)
            self.samples.append(sample(self.pids))

    def now(self) -> Sample:
        """A fresh sample, kept with the others."""
        current = sample(self.pids)
        self.samples.append(current)
        return current

    def mark(self) -> int:
        """A position to measure from (see :meth:`usage_since`)."""
        self.now()
        return len(self.samples) - 1

    def usage_since(self, mark: int) -> Usage:
        self.now()
        span = self.samples[mark:]
        first, last = span[0], span[-1]
        seconds = last.at - first.at
        return Usage(
            seconds=seconds,
            cpu_pct=100 * (last.cpu_s - first.cpu_s) / seconds if seconds > 0 else 0.0,
            rss_start_kb=first.rss_kb,
            rss_end_kb=last.rss_kb,
            rss_max_kb=max(s.rss_kb for s in span),
            fds_end=last.fds,
        )

    def fds_since(self, mark: int) -> list[tuple[float, int]]:
        """(seconds after the mark, open descriptors) for every sample since ``mark``."""
        start = self.samples[mark].at
        return [(s.at - start, s.fds) for s in self.samples[mark:]]
