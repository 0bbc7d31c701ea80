"""The history keeper: trims the stream history by age, every second."""

from __future__ import annotations

import trio

from actors import Actor, ActorContext
from perpstream.history import StreamHistory

__all__ = ["HISTORY", "HistoryKeeper"]

HISTORY = "history"


class HistoryKeeper(Actor):
    """Keeps the stream history within ``history_ttl_s`` and forgets idle streams."""

    kind = "history"
    SWEEP_INTERVAL_S = 1.0

    def __init__(self, history: StreamHistory) -> None:
        self.history = history

    async def setup(self, ctx: ActorContext) -> None:
        ctx.nursery.start_soon(self._sweep_periodically)

    async def _sweep_periodically(self) -> None:
        while True:
            await trio.sleep(self.SWEEP_INTERVAL_S)
            self.history.sweep()

    def describe(self) -> dict[str, object]:
        history = self.history
        return {
            "epochs": {"chain": history.durable.epoch, "memory": history.volatile.epoch},
            "streams": sum(log.streams for log in history.logs),
            "offset": {"chain": history.durable.head, "memory": history.volatile.head},
        }
