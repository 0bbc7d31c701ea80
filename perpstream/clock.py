"""Wall-clock time that follows trio's clock.

Oracle freshness, ``ts`` fields and funding accrual need epoch time, while the
integration tests run on trio's virtual clock. Anchoring epoch time to
``trio.current_time()`` once and advancing it with trio's clock gives real
wall time in production (the two clocks run at the same rate) and virtual
wall time under a MockClock, so a test that jumps 10 virtual seconds sees
prices go stale exactly as a daemon would in 10 real seconds.
"""

from __future__ import annotations

import time

import trio

__all__ = ["WallClock"]


class WallClock:
    """Epoch seconds derived from trio's clock; create it inside ``trio.run``."""

    def __init__(self, epoch_at_start: float | None = None) -> None:
        self._epoch_at_start = time.time() if epoch_at_start is None else epoch_at_start
        self._trio_at_start = trio.current_time()

    def now(self) -> float:
        """Epoch seconds, as a float."""
        return self._epoch_at_start + (trio.current_time() - self._trio_at_start)

    def now_ms(self) -> int:
        """Epoch milliseconds, the unit of the wire protocol's ``ts``."""
        return int(self.now() * 1000)
