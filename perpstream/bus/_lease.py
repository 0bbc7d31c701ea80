"""The core lease: at most one active core per bus, and a standby that takes over.

The active core holds ``{p}:lease`` (its id, with a TTL) and renews it
every third of the TTL; a standby tries to take it as often. A core that
cannot renew (Redis unreachable, or the key gone to another core) stops
being active at once — it exits, for its supervisor to start it again as a
standby — so two cores never publish at the same time for longer than the
TTL it could not renew in. A Redis that is unreachable (restarting), or
comes back empty, costs the active core nothing: it renews (or takes the
lease again) when Redis is back, unless another core holds it by then. ``kill -9`` of the active core: its lease
expires, and the standby is active within the TTL plus one try.
"""

from __future__ import annotations

import logging
import secrets
import socket

import coredis
import trio

from perpstream.bus._keys import BusKeys
from perpstream.bus._redis import REDIS_DOWN, RedisLink

__all__ = ["CoreLease", "LeaseLost"]

log = logging.getLogger("perpstream.bus")

# Renew while the key names this core, or take it again if it is gone (a Redis
# that restarted empty); never from another core. Atomic, as a script.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLost(RuntimeError):
    """This core is no longer the active one."""


class CoreLease:
    def __init__(self, link: RedisLink, keys: BusKeys, *, ttl_s: float, core_id: str | None = None) -> None:
        self.link = link
        self.keys = keys
        self.ttl_s = ttl_s
        self.core_id = core_id or f"{socket.gethostname()}:{secrets.token_hex(4)}"
        self.active = False

    @property
    def tick_s(self) -> float:
        return self.ttl_s / 3

    async def acquire(self) -> None:
        """Wait until this core holds the lease."""
        announced = False
        while True:
            try:
                taken = await self.link.client.set(self.keys.lease, self.core_id, condition=coredis.PureToken.NX,
                                                   px=int(self.ttl_s * 1000))
            except REDIS_DOWN as exc:
                self.link.went_down(exc)
                taken = False
            else:
                self.link.came_up()
            if taken:
                self.active = True
                log.info("core %s holds the lease: active", self.core_id)
                return
            if not announced:
                log.info("core %s: another core is active; standing by", self.core_id)
                announced = True
            await trio.sleep(self.tick_s)

    async def hold(self) -> None:
        """Renew the lease until another core holds it (then raise :class:`LeaseLost`).

        While Redis is unreachable nothing can be published anyway, and no
        core can take the lease from a Redis that is down; a Redis that only
        this core cannot reach is the one case where a standby may take over
        meanwhile, and the first renewal after it says so.
        """
        renew = self.link.client.register_script(_RENEW)
        while True:
            await trio.sleep(self.tick_s)
            try:
                kept: object = await renew(keys=[self.keys.lease], args=[self.core_id, int(self.ttl_s * 1000)])
            except REDIS_DOWN as exc:
                self.link.went_down(exc)
                continue
            if not kept:
                self.active = False
                raise LeaseLost(f"core {self.core_id}: another core holds the lease: no longer active")
            self.link.came_up()

    async def release(self) -> None:
        """Give the lease up (a graceful stop): the standby need not wait for it to expire."""
        if not self.active:
            return
        self.active = False
        release = self.link.client.register_script(_RELEASE)
        with trio.move_on_after(self.tick_s):
            try:
                await release(keys=[self.keys.lease], args=[self.core_id])
            except REDIS_DOWN:
                pass  # it expires on its own

    async def holder(self) -> str | None:
        """The active core's id, as Redis has it (None: none, or Redis unreachable)."""
        try:
            value = await self.link.client.get(self.keys.lease)
        except REDIS_DOWN:
            return None
        return None if value is None else value.decode()
