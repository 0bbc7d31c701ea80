"""Headless Debian Chromium driven by selenium, with an async face for trio tests.

The daemon under test runs in the test's own trio run, so a blocking
WebDriver call must not hold the event loop: every call goes through
``trio.to_thread.run_sync`` and the daemon keeps serving meanwhile.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

__all__ = ["INSTALL_HINT", "REQUIRE_ENV", "BrowserPage", "find_browser", "headless_chromium"]

INSTALL_HINT = (
    "no headless Chromium found: install Debian's browser and driver with "
    "`apt-get install chromium chromium-driver` (or run .ci/install-browser.sh as root)"
)
# CI sets this so a missing browser fails the run instead of skipping the test.
REQUIRE_ENV = "PERPSTREAM_REQUIRE_BROWSER"

# The network is closed to the browser: without these it waits on blocked
# update, sync and QUIC connections; no sandbox because tests may run as root.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--window-size=1440,1000",
)


def find_browser() -> tuple[str, str] | None:
    """Paths of chromium and chromedriver (``CHROMIUM``/``CHROMEDRIVER`` override), if both exist."""
    browser = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextmanager
def headless_chromium(browser: str, driver: str) -> Iterator[Any]:
    """A selenium WebDriver on a fresh profile, quit (and the profile removed) afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="perpstream-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # An explicit driver path: selenium never looks for (or downloads) one.
        web = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        try:
            yield web
        finally:
            web.quit()


class BrowserPage:
    """The page under test: navigate, run JavaScript, wait for conditions, type."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def _call(self, function: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(function, *args)

    async def open(self, url: str) -> None:
        await self._call(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body: ``return …``) in the page."""
        return await self._call(self.driver.execute_script, script, *args)

    async def wait_for(self, script: str, *args: Any, timeout: float = 15.0, what: str = "") -> Any:
        """Poll ``script`` until it returns something truthy, and return that."""
        with trio.move_on_after(timeout):
            while not (value := await self.js(script, *args)):
                await trio.sleep(0.1)
            return value
        status = await self.js(
            "return [document.querySelector('#connection')?.dataset.state,"
            " document.querySelector('#account-status')?.textContent?.trim()].join(' | ')"
        )
        raise AssertionError(f"timed out after {timeout} s waiting for {what or script} (page: {status})")

    async def type_into(self, element_id: str, text: str, *, submit: bool = True) -> None:
        """Type like a user: clear the field, send the keys, press Enter."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        def type_keys() -> None:
            field = self.driver.find_element(By.ID, element_id)
            field.clear()
            field.send_keys(text + (Keys.ENTER if submit else ""))

        await self._call(type_keys)

    async def console(self) -> list[dict[str, Any]]:
        """Browser console entries since the last call."""
        return list(await self._call(self.driver.get_log, "browser"))

    async def screenshot(self, width: int) -> bytes:
        """A PNG of the whole page at ``width`` CSS pixels."""
        height = int(await self.js("return document.documentElement.scrollHeight"))
        await self._call(self.driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        try:
            shot = await self._call(self.driver.execute_cdp_cmd, "Page.captureScreenshot",
                                    {"format": "png", "captureBeyondViewport": True})
        finally:
            await self._call(self.driver.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
        return base64.b64decode(shot["data"])
