"""Abuse limits: what one client address may hold, how fast it may ask. No I/O.

The allowance is per client address across all of its connections, in the
spirit of the public venues (Hyperliquid: 100 connections, 1000
subscriptions and 10 distinct users per IP; Binance: a few subscribe
messages per second per connection, repeat offenders banned; dYdX's socks:
a subscribe rate limit per connection). An address over a limit gets an
``error`` with ``retry_after_s`` and a close 4429; each such refusal is a
*strike*, and an address that collects enough strikes within a window is
*cooled down*: its next handshakes get HTTP 429 with ``Retry-After`` until
the cooldown ends, before any WebSocket state is built for it.

Every method takes ``now`` (seconds on any monotonic clock), so the logic is
tested directly on virtual time. Entries of addresses that hold nothing and
owe nothing are dropped, so the table's size follows the live clients.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, deque
from collections.abc import Iterable

import attrs

from perpstream.config import LimitsConfig

__all__ = ["ClientAddresses", "ClientLimits", "Refusal", "TokenBucket"]


@attrs.frozen
class Refusal:
    """Why a request was refused: the ``error`` code, words for a human, when to retry."""

    code: str
    message: str
    retry_after_s: float
    starts_cooldown: bool = False  # this refusal's strike cooled the address down


class TokenBucket:
    """``burst`` requests at once, refilled at ``rate`` per second."""

    __slots__ = ("rate", "burst", "_tokens", "_updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> float:
        """Spend one token: 0.0 when granted, else the seconds until one is available."""
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class _Client:
    """One address's holdings and record."""

    __slots__ = ("connections", "subscriptions", "accounts", "strikes", "cooled_until")

    def __init__(self) -> None:
        self.connections = 0
        self.subscriptions = 0
        self.accounts: Counter[str] = Counter()  # account -> subscriptions watching it
        self.strikes: deque[float] = deque()
        self.cooled_until = -math.inf

    def idle(self, now: float, window: float) -> bool:
        while self.strikes and self.strikes[0] <= now - window:
            self.strikes.popleft()
        return not self.connections and not self.subscriptions and not self.strikes and now >= self.cooled_until


class ClientLimits:
    """Per-address accounting of connections, subscriptions, accounts and strikes."""

    def __init__(self, limits: LimitsConfig, *, max_connections: int) -> None:
        self.limits = limits
        self.max_connections = max_connections
        self._clients: dict[str, _Client] = {}
        self._next_sweep = -math.inf
        self.cooldowns = 0  # addresses cooled down so far (a counter for metrics)

    def __len__(self) -> int:
        return len(self._clients)

    def _client(self, address: str) -> _Client:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = _Client()
        return client

    def _forget_if_idle(self, address: str, now: float) -> None:
        client = self._clients.get(address)
        if client is not None and client.idle(now, self.limits.strike_window_s):
            del self._clients[address]

    # ------------------------------------------------------------ handshakes

    def cooling_down(self, address: str, now: float) -> float:
        """Seconds left of the address's cooldown (0.0: none); checked before a handshake is accepted."""
        client = self._clients.get(address)
        if client is None:
            return 0.0
        left = client.cooled_until - now
        if left > 0:
            return left
        self._forget_if_idle(address, now)
        return 0.0

    def _sweep(self, now: float) -> None:
        """Drop every idle entry, once per strike window: addresses that struck and left are not kept."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.limits.strike_window_s
        window = self.limits.strike_window_s
        for address in [a for a, c in self._clients.items() if c.idle(now, window)]:
            del self._clients[address]

    def connect(self, address: str, now: float) -> Refusal | None:
        """Count a new connection, or refuse it (a strike)."""
        self._sweep(now)
        client = self._client(address)
        if client.connections >= self.max_connections:
            return self._strike(address, client, now, Refusal(
                "too_many_connections", f"at most {self.max_connections} connections per client", 0.0))
        client.connections += 1
        return None

    def disconnect(self, address: str, now: float) -> None:
        client = self._clients.get(address)
        if client is not None:
            client.connections = max(0, client.connections - 1)
            self._forget_if_idle(address, now)

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, address: str, account: str | None, now: float) -> Refusal | None:
        """Count one more subscription (watching ``account``, if a positions stream), or refuse it."""
        client = self._client(address)
        limit = self.limits.max_subscriptions_per_client
        if client.subscriptions >= limit:
            return self._strike(address, client, now, Refusal(
                "too_many_subscriptions", f"at most {limit} subscriptions per client across its connections", 0.0))
        if account is not None and account not in client.accounts:
            accounts = self.limits.max_accounts_per_client
            if len(client.accounts) >= accounts:
                return self._strike(address, client, now, Refusal(
                    "too_many_accounts", f"at most {accounts} distinct accounts watched per client", 0.0))
        client.subscriptions += 1
        if account is not None:
            client.accounts[account] += 1
        return None

    def unsubscribe(self, address: str, account: str | None, now: float) -> None:
        client = self._clients.get(address)
        if client is None:
            return
        client.subscriptions = max(0, client.subscriptions - 1)
        if account is not None and client.accounts[account] > 0:
            client.accounts[account] -= 1
            if not client.accounts[account]:
                del client.accounts[account]
        self._forget_if_idle(address, now)

    # ------------------------------------------------------------ strikes

    def strike(self, address: str, now: float, refusal: Refusal) -> Refusal:
        """Record a limit hit decided elsewhere (a connection's request rate)."""
        return self._strike(address, self._client(address), now, refusal)

    @property
    def pace_s(self) -> float:
        """Retrying no more often than this never earns a cooldown: the least ``retry_after_s``."""
        return self.limits.strike_window_s / max(1, self.limits.strikes_before_cooldown - 1)

    def _strike(self, address: str, client: _Client, now: float, refusal: Refusal) -> Refusal:
        """Record the strike; the refusal's ``retry_after_s`` becomes the pace, or the cooldown it earned."""
        client.strikes.append(now)
        window = self.limits.strike_window_s
        while client.strikes and client.strikes[0] <= now - window:
            client.strikes.popleft()
        if self.limits.cooldown_s > 0 and len(client.strikes) >= self.limits.strikes_before_cooldown:
            client.strikes.clear()
            client.cooled_until = now + self.limits.cooldown_s
            self.cooldowns += 1
            return attrs.evolve(refusal, retry_after_s=self.limits.cooldown_s, starts_cooldown=True)
        self._forget_if_idle(address, now)
        return attrs.evolve(refusal, retry_after_s=max(refusal.retry_after_s, self.pace_s))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddresses:
    """Who a request comes from: the peer, or behind trusted proxies the client they name."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._networks: tuple[Network, ...] = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def resolve(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The client's address: the peer, unless the peer is a trusted proxy.

        Then ``X-Forwarded-For`` (every header line, in order) is read from
        the right: each trusted proxy appended the address it saw, so the
        first entry that is not a trusted proxy is the client. Entries left
        of it are whatever the client claimed and are never believed. A
        header with nothing usable leaves the proxy's own address.
        """
        if not self._networks or not self._trusted(peer):
            return peer
        hops = [hop.strip() for line in forwarded_for for hop in line.split(",")]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a malformed chain cannot be trusted further
            if not self._trusted(hop):
                return hop
        return peer
