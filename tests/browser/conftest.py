"""One headless Chromium for the whole browser test session (skipped without one)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.browser import INSTALL_HINT, REQUIRE_ENV, BrowserPage, find_browser, headless_chromium


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set, so the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    found = find_browser()
    if found is None:
        _unavailable(INSTALL_HINT)
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed: pip install -e '.[test]'")
    assert found is not None
    with headless_chromium(*found) as driver:
        yield driver


@pytest.fixture
def page(chromium: Any) -> Iterator[BrowserPage]:
    """The browser on a blank page with an empty console, for one test."""
    chromium.get("about:blank")
    chromium.get_log("browser")
    yield BrowserPage(chromium)
    chromium.get("about:blank")
