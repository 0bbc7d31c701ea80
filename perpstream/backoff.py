"""Exponential retry delays with jitter, the one implementation the service uses.

The price feed's reconnects and the ``watch`` client's both wait this way.
Jitter spreads the retries of many clients dropped at the same moment (a
Hermes restart, a daemon restart) so they do not return as one burst and
hit a rate limit together. Pure: the random source is injected so tests can
pin it, and nothing here sleeps.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays ``initial × multiplier^n``, capped at ``maximum``, each shortened by up to ``jitter``.

    With ``jitter = 0.2`` a nominal 4 s delay becomes a uniform draw from
    [3.2 s, 4 s]: jitter only ever shortens, so ``maximum`` is a true bound.
    """

    def __init__(
        self,
        *,
        initial: float,
        maximum: float,
        multiplier: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if multiplier < 1:
            raise ValueError("backoff multiplier must be >= 1")
        if not 0 <= jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")
        self._initial = initial
        self._maximum = maximum
        self._multiplier = multiplier
        self._jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._nominal = initial

    def next_delay(self) -> float:
        """The delay before the next attempt; each call escalates the following one."""
        nominal = self._nominal
        self._nominal = min(self._maximum, nominal * self._multiplier)
        return nominal * (1 - self._jitter * self._rng.random())

    def reset(self) -> None:
        """Start again from ``initial``, after a connection proved healthy."""
        self._nominal = self._initial
