"""Options for the long variants of the reliability suite.

``pytest tests/reliability --run-slow`` also runs the tests marked ``slow``
(the long soak); ``--soak-minutes N`` sets how long that soak churns
(default 10). pytest reads options only from the conftest files of the
paths it is given, so pass this directory (or a file in it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

SLOW_SOAK_MINUTES = 10.0
HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability")
    options = [
        (("--run-slow",), {"action": "store_true", "default": False,
                            "help": "also run the long variants (tests marked slow)"}),
        (("--soak-minutes",), {"type": float, "default": SLOW_SOAK_MINUTES,
                                "help": "minutes of churn in the long soak (with --run-slow)"}),
    ]
    for names, settings in options:
        try:
            group.addoption(*names, **settings)
        except ValueError:
            pass  # declared already by another conftest: share it


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow", default=False):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow")
    for item in items:
        if "slow" in item.keywords and item.path.is_relative_to(HERE):
            item.add_marker(skip)


@pytest.fixture
def soak_minutes(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--soak-minutes", default=SLOW_SOAK_MINUTES))
