from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .redis_server import REQUIRE_ENV, RedisServer, redis_unavailable


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real Redis of this test's own (skipped where there is none, required in CI)."""
    reason = redis_unavailable()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        server.stop()
