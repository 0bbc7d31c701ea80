"""What every price source looks like to the rest of the service.

The feed actor runs one ``PriceFeed`` and forwards its ``PriceUpdate``s to the
markets; ``/readyz`` and ``/metrics`` read its ``FeedStatus``. Keeping the
interface this small lets the real Hermes client and the simulated feed be
swapped by configuration alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, runtime_checkable

import attrs
import trio

from perpstream.domain.prices import PriceUpdate

__all__ = ["FeedStatus", "FeedStatusRecorder", "OnUpdate", "PriceFeed"]

OnUpdate = Callable[[PriceUpdate], Awaitable[None]]
"""The callback a feed awaits for every update it delivers, in order."""


@attrs.frozen
class FeedStatus:
    """A snapshot of a feed's health, taken when asked for."""

    source: str
    connected: bool
    last_update_wall: float | None  # epoch seconds of the last delivered update
    reconnects: int  # connection attempts after the first one
    last_error: str | None  # why the feed last failed or disconnected; kept after recovery
    newest_publish_times: Mapping[str, int]  # feed id -> newest delivered publish_time
    #: Configured feeds the source does not serve: unknown to Hermes, or
    #: delisted while streaming. The other feeds carry on without them.
    missing_feeds: tuple[str, ...] = ()


@runtime_checkable
class PriceFeed(Protocol):
    """A source of oracle prices that runs until cancelled."""

    source: str

    async def run(
        self,
        on_update: OnUpdate,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver updates to ``on_update`` forever.

        ``task_status.started()`` is called once the feed has something to
        offer (see each implementation for exactly when). An exception raised
        by ``on_update`` is not the feed's to handle: it propagates.
        """
        ...

    def status(self) -> FeedStatus: ...


class FeedStatusRecorder:
    """The mutable bookkeeping behind ``FeedStatus``, shared by the feeds."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._connected = False
        self._last_update_wall: float | None = None
        self._reconnects = 0
        self._last_error: str | None = None
        self._newest: dict[str, int] = {}
        self._missing: tuple[str, ...] = ()

    def connected(self) -> None:
        self._connected = True

    def disconnected(self, reason: str) -> None:
        self._connected = False
        self._last_error = reason

    def error(self, message: str) -> None:
        """Remember a failure that did not drop the connection."""
        self._last_error = message

    def reconnecting(self) -> None:
        self._reconnects += 1

    def missing(self, feed_ids: tuple[str, ...]) -> None:
        """The configured feeds the source is not serving, as of now."""
        self._missing = feed_ids

    def delivered(self, update: PriceUpdate, wall_time: float) -> None:
        self._last_update_wall = wall_time
        newest = self._newest.get(update.feed_id)
        if newest is None or update.publish_time > newest:
            self._newest[update.feed_id] = update.publish_time

    def snapshot(self) -> FeedStatus:
        return FeedStatus(
            source=self._source,
            connected=self._connected,
            last_update_wall=self._last_update_wall,
            reconnects=self._reconnects,
            last_error=self._last_error,
            newest_publish_times=dict(self._newest),
            missing_feeds=self._missing,
        )
