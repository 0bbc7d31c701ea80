"""Take the dashboard screenshot for the docs from the live embedded demo.

    python -m tests.browser.screenshot [docs/dashboard.png]

Starts the embedded demo (simulated feed, embedded chain, demo traders),
watches the first demo account to trade while the demo trades for a while,
and saves a full-page PNG of what the browser shows.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx
import trio

from tests.browser.browser import INSTALL_HINT, BrowserPage, find_browser, headless_chromium
from tests.e2e.daemon import e2e_config, running_daemon

WIDTH = 1440
TRADING_S = 20.0  # long enough for open interest everywhere and a few trades of the watched account
FLASH_S = 0.8  # a price tick's colour flash lasts 0.7 s: capture after it, between ticks

BTC_PRICE = "document.querySelector(\".tile[data-market='btc-usdc-perp'] .price\").dataset.value"


async def take(output: Path, page: BrowserPage) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        # The default one-second price cadence; the demo traders a little busier than by default.
        config = e2e_config(Path(data_dir), streams={"prices_interval_ms": 1000},
                            chain={"demo": {"trade_interval_ms": 600}})
        async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.http) as http:
            with trio.fail_after(30):
                while not (positions := (await http.get("/api/v1/positions")).json()["positions"]):
                    await trio.sleep(0.2)
            # Watch from the start, so the account's later trades arrive as events.
            account = positions[0]["user_address"]
            await page.open(f"{daemon.http}/#account={account}")
            await trio.sleep(TRADING_S)
            price = await page.js(f"return {BTC_PRICE}")
            await page.wait_for(f"return {BTC_PRICE} !== arguments[0]", price, what="a price tick")
            await trio.sleep(FLASH_S)
            output.write_bytes(await page.screenshot(WIDTH))
            await page.open("about:blank")
    print(f"wrote {output} (watching {account})")


def main() -> None:
    output = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png")
    found = find_browser()
    if found is None:
        sys.exit(INSTALL_HINT)
    with headless_chromium(*found) as driver:
        trio.run(take, output, BrowserPage(driver))


if __name__ == "__main__":
    main()
