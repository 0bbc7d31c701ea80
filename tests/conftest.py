"""Options for the long variants of the suite.

``--run-slow`` also runs the tests marked ``slow`` (the long soak);
``--soak-minutes N`` sets how long that soak churns (default 10). Declared
here, at the top of ``tests/``, so they work whatever paths pytest is given.
"""

from __future__ import annotations

import pytest

SLOW_SOAK_MINUTES = 10.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perpstream")
    group.addoption("--run-slow", action="store_true", default=False,
                    help="also run the long variants (tests marked slow)")
    group.addoption("--soak-minutes", type=float, default=SLOW_SOAK_MINUTES,
                    help="minutes of churn in the long soak (with --run-slow)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture
def soak_minutes(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--soak-minutes"))
