"""The core's view of which accounts edges are watching: their sessions run while they are.

Each edge keeps ``{p}:interest:{address}`` alive while it has subscribers to
that account's positions stream. Every second this actor lists those keys
and holds, for each account named, what a local subscriber would hold: a
subscription to the account's positions stream (the session directory
counts and rebuilds from those) and the session itself. An account whose
key expired is released and stops after the usual grace period.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

import trio

from actors import Actor, ActorContext, Policy, Sink
from perpstream.bus._keys import BusKeys
from perpstream.bus._redis import REDIS_DOWN, RedisLink
from perpstream.services.session import acquire_session
from perpstream.services.topics import SESSION_DIRECTORY
from perpstream.streams import BadStreamParameter, StreamKey, parse_address
from perpstream.protocol import Channel

__all__ = ["INTEREST", "InterestWatcher"]

log = logging.getLogger("perpstream.bus")

INTEREST = "interest"


class InterestWatcher(Actor):
    """Holds the sessions of the accounts the edges watch (registered as ``interest``)."""

    kind = "interest"
    POLL_INTERVAL_S = 1.0

    def __init__(self, link: RedisLink, keys: BusKeys) -> None:
        self.link = link
        self.keys = keys
        self._held: dict[str, AsyncExitStack] = {}
        self._sink = Sink()

    async def setup(self, ctx: ActorContext) -> None:
        ctx.nursery.start_soon(self._poll, ctx)

    async def on_stop(self) -> None:
        for stack in self._held.values():
            await stack.aclose()
        self._held.clear()

    def describe(self) -> dict[str, object]:
        return {"accounts": len(self._held)}

    async def _poll(self, ctx: ActorContext) -> None:
        prefix = self.keys.interest("")
        while True:
            try:
                names = [key.decode() async for key in self.link.client.scan_iter(match=self.keys.interest_pattern)]
            except REDIS_DOWN as exc:
                self.link.went_down(exc)  # keep what is held: the edges' keys may still be there
            else:
                await self._hold_exactly({name.removeprefix(prefix) for name in names}, ctx)
            await trio.sleep(self.POLL_INTERVAL_S)

    async def _hold_exactly(self, wanted: set[str], ctx: ActorContext) -> None:
        for address in list(self._held):
            if address not in wanted:
                await self._held.pop(address).aclose()
        for raw in wanted - self._held.keys():
            try:
                address = parse_address(raw)
            except BadStreamParameter:
                log.warning("ignoring an interest key for %r: not an address", raw[:64])
                continue
            stack = AsyncExitStack()
            key = StreamKey(Channel.POSITIONS, address)
            subscription = ctx.topic(key.topic, policy=Policy.CONFLATE, capacity=1).subscribe(self._sink)
            stack.callback(subscription.close)
            try:
                await stack.enter_async_context(acquire_session(ctx.registry.ref(SESSION_DIRECTORY), address))
            except Exception as exc:  # the directory is restarting: the next poll tries again
                await stack.aclose()
                log.info("session of %s not started yet: %r", address, exc)
                continue
            self._held[address] = stack
