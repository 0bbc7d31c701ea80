"""The cluster tests' fixture: a real Redis of each test's own (see redis_server.py)."""

from .redis_server import redis  # noqa: F401 - the fixture (the on-chain cluster test in tests/chain uses it too)
