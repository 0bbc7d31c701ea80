from __future__ import annotations

import random
from typing import Any

import pytest

from perpstream.backoff import Backoff


def test_grows_exponentially_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=5, multiplier=2, jitter=0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1, 2, 4, 5, 5]


def test_reset_starts_again_from_initial() -> None:
    backoff = Backoff(initial=1, maximum=60, multiplier=3, jitter=0)
    backoff.next_delay(), backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1


def test_jitter_only_shortens_within_its_fraction() -> None:
    backoff = Backoff(initial=1, maximum=8, multiplier=2, jitter=0.25, rng=random.Random(3))
    nominal = [1, 2, 4, 8, 8, 8, 8, 8]
    delays = [backoff.next_delay() for _ in nominal]
    assert all(0.75 * n <= d <= n for d, n in zip(delays, nominal))
    assert len(set(delays[3:])) == len(delays[3:])  # capped delays still spread out


def test_same_seed_same_delays() -> None:
    def draw(seed: int) -> list[float]:
        backoff = Backoff(initial=1, maximum=30, rng=random.Random(seed))
        return [backoff.next_delay() for _ in range(5)]

    assert draw(11) == draw(11) != draw(12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0, "maximum": 1},
        {"initial": 2, "maximum": 1},
        {"initial": 1, "maximum": 2, "multiplier": 0.5},
        {"initial": 1, "maximum": 2, "jitter": 1.5},
    ],
)
def test_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
