"""Waiting on a condition with a deadline (real I/O: no virtual clock)."""

from __future__ import annotations

from typing import Callable

import trio


async def wait_until(condition: Callable[[], object], *, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` every 20 ms until it holds; fail after ``timeout`` seconds."""
    with trio.move_on_after(timeout) as scope:
        while not condition():
            await trio.sleep(0.02)
    if scope.cancelled_caught:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
