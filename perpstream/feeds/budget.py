"""A request budget: a token bucket that every request to Hermes draws from.

Pyth's hosted Hermes allows 30 requests per 10 s from one address and
answers 429 for the next 60 s once that is exceeded. Backoff alone does not
keep a client inside that limit: a connection that opens, delivers and
drops at once resets the backoff every time, and each reconnect costs two
requests (the stream and the gap fill). So every path that makes a request
takes a token first; a storm of drops and errors then costs at most
``burst`` requests at once and ``rate`` per second after that.

Pure: the caller passes the time (any monotonic clock) and does the waiting.
"""

from __future__ import annotations

__all__ = ["RequestBudget"]


class RequestBudget:
    """At most ``burst`` requests at once, refilled at ``per_minute`` requests a minute."""

    def __init__(self, *, per_minute: float, burst: int, now: float) -> None:
        if not per_minute > 0:
            raise ValueError(f"requests_per_minute must be > 0, got {per_minute}")
        if burst < 1:
            raise ValueError(f"request_burst must be >= 1, got {burst}")
        self._rate = per_minute / 60
        self._burst = burst
        self._tokens = float(burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = max(self._updated, now)

    def available(self, now: float) -> bool:
        """Whether a request could be made at ``now`` without waiting."""
        self._refill(now)
        return self._tokens >= 1

    def take(self, now: float) -> float:
        """Reserve one request; returns how long to wait before making it (0 when at once).

        The token is spent now, so reservations made while waiting queue up
        behind this one rather than overtaking it.
        """
        self._refill(now)
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate
