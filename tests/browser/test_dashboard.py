"""The dashboard end to end: the real daemon, the page in headless Chromium.

Two kinds of daemon. The embedded demo (simulated feed, embedded EVM chain,
demo traders) shows the page works on the real thing: prices appear and
move, stats fill in, a demo account's positions show up. A steered daemon
(prices the test moves, positions the test sets) makes what a random walk
only might do happen on cue: a position falling through its warning,
critical and liquidation levels, a feed going quiet, a server restart.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from eth_utils.address import to_checksum_address

from perpstream.config import Config
from tests.browser.browser import BrowserPage
from tests.browser.daemons import position, serving, steered_config, steered_sources
from tests.browser.steered import SteeredPrices
from tests.clients.live import connect, cuttable_proxy
from tests.e2e.daemon import e2e_config, free_port, running_daemon

pytestmark = pytest.mark.e2e

BTC, ETH, SOL = "btc-usdc-perp", "eth-usdc-perp", "sol-usdc-perp"
ALICE = to_checksum_address("0x" + "a1" * 20)
BOB = to_checksum_address("0x" + "b2" * 20)

# Alice's BTC long: 1 BTC on 1,000 USDC at 65,000 (mmr 0.005, σ = 2 bps of the price).
# Health at these levels: 65,000 → 3.07 · 64,390 → 1.17 · 64,340 → 1.02 · 64,300 → 0.89.
ALICE_BTC = position(1, ALICE, BTC, long=True, size="1", collateral="1000", entry="65000")
ALICE_SOL = position(2, ALICE, SOL, long=False, size="10", collateral="300", entry="150")
BOB_ETH = position(3, BOB, ETH, long=False, size="2", collateral="1000", entry="3400")
ALICE_ETH = position(4, ALICE, ETH, long=True, size="0.5", collateral="200", entry="3400")

START_LEVELS = {BTC: "65000", ETH: "3400", SOL: "150"}

# ------------------------------------------------------------ page probes (JavaScript expressions)

TILE_PRICES = """Object.fromEntries([...document.querySelectorAll('.tile')]
  .map(t => [t.dataset.market, t.querySelector('[data-field=price]').dataset.value || null]))"""
POSITION_ROWS = """[...document.querySelectorAll('#positions tbody tr[data-position-id]')].map(r => {
  const health = r.querySelector('.health');
  return {id: r.dataset.positionId, market: r.dataset.market,
          health: health.dataset.value, level: health.dataset.level,
          colour: getComputedStyle(health).color};
})"""
WARNINGS = """[...document.querySelectorAll('#events li[data-type=liquidation_warning]')]
  .map(li => ({severity: li.dataset.severity, position: li.dataset.positionId, text: li.textContent,
               offset: Number(li.dataset.offset)}))"""
CONNECTION_STATE = "document.querySelector('#connection').dataset.state"
ACCOUNT_STATUS = "document.querySelector('#account-status')"
TILE_STALE = "document.querySelector(`.tile[data-market='${arguments[0]}']`).dataset.stale === 'true'"


def expected_level(health: str | None) -> str:
    """The protocol's levels, as the page must colour them."""
    if not health:
        return "unknown"
    value = Decimal(health)
    if value >= Decimal("1.2"):
        return "ok"
    if value >= Decimal("1.05"):
        return "warning"
    return "critical" if value >= 1 else "liquidatable"


async def wait_for_level(page: BrowserPage, position_id: str, level: str) -> dict[str, Any]:
    row: dict[str, Any] = await page.wait_for(
        f"return {POSITION_ROWS}.find(r => r.id === arguments[0] && r.level === arguments[1]);",
        position_id, level, what=f"position {position_id[-4:]} at level {level}",
    )
    return row


async def assert_quiet_console(page: BrowserPage) -> None:
    """No script error, no policy violation, no failed request while the server was up."""
    errors = [entry["message"] for entry in await page.console() if entry["level"] == "SEVERE"]
    assert errors == [], errors


def feed(config: Config, market_id: str) -> str:
    market = config.market(market_id)
    assert market is not None
    return market.pyth_feed_id


# ------------------------------------------------------------ the embedded demo


async def test_live_prices_stats_and_a_demo_accounts_positions(tmp_path: Path, page: BrowserPage) -> None:
    async with running_daemon(e2e_config(tmp_path)) as daemon:
        await page.open(daemon.http + "/")
        first = await page.wait_for(
            f"const p = {TILE_PRICES}; return Object.values(p).every(Boolean) && p;",
            what="a price on every tile")
        assert sorted(first) == [BTC, ETH, SOL]
        assert all(Decimal(price) > 0 for price in first.values())
        await page.wait_for(
            f"return {TILE_PRICES}[arguments[0]] !== arguments[1];", BTC, first[BTC],
            what="the BTC price to change")
        assert await page.js(f"return {CONNECTION_STATE}") == "live"

        async with httpx.AsyncClient(base_url=daemon.http) as http:
            with trio.fail_after(20):
                while not (open_positions := (await http.get("/api/v1/positions")).json()["positions"]):
                    await trio.sleep(0.2)
            # The most leveraged demo account: the one a trader would watch.
            riskiest = max(open_positions, key=lambda p: Decimal(p["leverage"] or 0))
            account = riskiest["user_address"]
            await page.type_into("account-input", account.lower())

            seen: set[str] = set()  # every position the account had while the page was loading
            with trio.fail_after(15):
                while True:
                    answer = (await http.get(f"/api/v1/positions/{account}")).json()
                    seen |= {p["position_id"] for p in answer["positions"]}
                    rows = await page.js(f"return {POSITION_ROWS}")
                    if rows and {row["id"] for row in rows} <= seen:
                        break
                    await trio.sleep(0.2)
        for row in rows:
            assert row["level"] == expected_level(row["health"]), row
        status = await page.js(f"return {ACCOUNT_STATUS}.textContent")
        assert account in status  # the server's checksummed form, typed in lower case

        stats = await page.wait_for(
            "const t = document.querySelector('.tile[data-market=\"btc-usdc-perp\"]');"
            "const oi = t.querySelector('[data-field=open_interest_usd]').textContent;"
            "return oi.startsWith('$') && oi;", what="BTC open interest")
        assert stats.startswith("$")
        candidates = await page.wait_for(
            "return document.querySelectorAll('#candidates tbody tr[data-position-id]').length",
            what="liquidation candidates")
        assert candidates >= 1
        await assert_quiet_console(page)


# ------------------------------------------------------------ steered prices


async def test_a_liquidation_warning_shows_as_the_price_falls(tmp_path: Path, page: BrowserPage) -> None:
    config = steered_config(tmp_path, free_port())
    prices = SteeredPrices({feed(config, m): level for m, level in START_LEVELS.items()})
    async with serving(config, sources=steered_sources(prices, [ALICE_BTC, ALICE_SOL, BOB_ETH])) as daemon:
        await page.open(daemon.http + "/")
        await page.type_into("account-input", ALICE)
        rows = await page.wait_for(f"const r = {POSITION_ROWS}; return r.length === 2 && r;",
                                   what="Alice's two positions")
        assert {row["id"] for row in rows} == {ALICE_BTC.position_id, ALICE_SOL.position_id}  # not Bob's
        assert all(row["level"] == "ok" for row in rows)
        green = rows[0]["colour"]

        colours = {}
        # A warning's severity is the level the position fell to.
        for level, price in [("warning", "64370"), ("critical", "64330"), ("liquidatable", "64260")]:
            prices.steer(feed(config, BTC), price)
            warning = await page.wait_for(
                f"return {WARNINGS}.find(w => w.severity === arguments[0]);", level,
                what=f"a {level} warning")
            assert warning["position"] == ALICE_BTC.position_id
            row = await wait_for_level(page, ALICE_BTC.position_id, level)
            assert expected_level(row["health"]) == level
            colours[level] = row["colour"]
        assert len({green, *colours.values()}) == 4, "each health level has its own colour"

        # The newest warning is on top, and the candidates table agrees.
        warnings = await page.js(f"return {WARNINGS}")
        assert [w["severity"] for w in warnings] == ["liquidatable", "critical", "warning"]
        assert "health 0.8" in warnings[0]["text"]
        await page.wait_for(
            "const r = document.querySelector(`#candidates tr[data-position-id='${arguments[0]}']`);"
            "return r && r.textContent.includes('liquidatable');", ALICE_BTC.position_id,
            what="the candidate marked liquidatable")
        assert "1 liquidatable" in await page.js("return document.querySelector('#candidates-summary').textContent")
        await assert_quiet_console(page)


async def test_a_quiet_feed_shows_stale_and_the_page_reconnects_after_a_restart(
    tmp_path: Path, page: BrowserPage
) -> None:
    config = steered_config(tmp_path, free_port(), stale_after_ms=2000)
    prices = SteeredPrices({feed(config, m): level for m, level in START_LEVELS.items()})
    async with serving(config, sources=steered_sources(prices, [ALICE_BTC, ALICE_SOL])) as daemon:
        await page.open(f"{daemon.http}/#account={ALICE}")
        await page.wait_for(f"return {POSITION_ROWS}.length === 2", what="Alice's positions")
        assert not await page.js(f"return {TILE_STALE}", SOL)
        prices.halt(feed(config, SOL))
        await page.wait_for(f"return {TILE_STALE}", SOL, timeout=10, what="the SOL tile to turn stale")
        assert not await page.js(f"return {TILE_STALE}", BTC)
        assert await page.js("return getComputedStyle(document.querySelector("
                             "\".tile[data-market='sol-usdc-perp'] .stale-badge\")).display") != "none"

    # The server is gone: the page says so, and keeps trying on its own.
    await page.wait_for(f"return {CONNECTION_STATE} === 'reconnecting'", what="the outage shown")
    await trio.sleep(2)  # long enough for retries to fail: the page must keep trying on its own

    # Back on the same port, where Alice has since closed SOL and opened ETH.
    prices = SteeredPrices({feed(config, m): level for m, level in START_LEVELS.items()})
    async with serving(config, sources=steered_sources(prices, [ALICE_BTC, ALICE_ETH])):
        await page.wait_for(f"return {CONNECTION_STATE} === 'live'", timeout=20,
                            what="the page to reconnect")
        rows = await page.wait_for(
            f"const r = {POSITION_ROWS}; return r.some(x => x.market === 'eth-usdc-perp') && r;",
            what="Alice's positions from the restarted server")
        assert {row["id"] for row in rows} == {ALICE_BTC.position_id, ALICE_ETH.position_id}
        await page.wait_for(f"return !({TILE_STALE})", SOL, what="SOL live again")
        # Its history went with the old server (no history file here): the page says what it cannot know.
        gap = await page.js("return [...document.querySelectorAll('#events li[data-type=gap]')].map(li => li.textContent)")
        assert len(gap) == 1 and "events may be missing here" in gap[0], gap


async def test_after_a_dropped_connection_the_page_resumes_and_shows_the_warnings_it_missed(
    tmp_path: Path, page: BrowserPage
) -> None:
    """Warnings raised while the page was cut off arrive when it resumes (``since``): each once, none lost."""
    config = steered_config(tmp_path, free_port())
    prices = SteeredPrices({feed(config, m): level for m, level in START_LEVELS.items()})
    async with serving(config, sources=steered_sources(prices, [ALICE_BTC])) as daemon, \
            cuttable_proxy(daemon.port) as proxy, connect(daemon.ws(f"/api/v1/ws/positions/{ALICE}")) as control:
        await page.open(f"{proxy.http}/#account={ALICE}")
        await wait_for_level(page, ALICE_BTC.position_id, "ok")
        proxy.cut()
        await page.wait_for(f"return {CONNECTION_STATE} === 'reconnecting'", what="the outage shown")
        # While the page is away, the position falls through two levels: a warning for each.
        missed = []
        with trio.fail_after(15):
            for level, price in [("warning", "64370"), ("critical", "64330")]:
                prices.steer(feed(config, BTC), price)
                while not (message := json.loads(await control.get_message()))["type"] == "liquidation_warning":
                    pass
                assert message["severity"] == level
                missed.append(message["offset"])
        proxy.release()
        await page.wait_for(f"return {CONNECTION_STATE} === 'live'", what="the page to reconnect")
        warnings = await page.wait_for(f"const w = {WARNINGS}; return w.length >= 2 && w;",
                                       what="the warnings raised while offline")
        await wait_for_level(page, ALICE_BTC.position_id, "critical")
        assert [(w["severity"], w["offset"]) for w in warnings] == [("critical", missed[1]), ("warning", missed[0])]
        assert await page.js("return document.querySelectorAll('#events li[data-type=gap]').length") == 0
        await assert_quiet_console(page)


async def test_a_bad_address_is_explained_and_a_good_one_still_works(tmp_path: Path, page: BrowserPage) -> None:
    config = steered_config(tmp_path, free_port())
    prices = SteeredPrices({feed(config, m): level for m, level in START_LEVELS.items()})
    async with serving(config, sources=steered_sources(prices, [ALICE_BTC])) as daemon:
        await page.open(daemon.http + "/")
        await page.type_into("account-input", "0x1234")  # refused by the page itself
        assert "not an account address" in await page.js(f"return {ACCOUNT_STATUS}.textContent")
        bad_checksum = "0x" + "aB" * 20  # well-formed, but its mixed case is not EIP-55: the server refuses it
        await page.type_into("account-input", bad_checksum)
        refusal = await page.wait_for(
            f"const s = {ACCOUNT_STATUS}; "
            "return s.classList.contains('error') && s.textContent.includes('refused') && s.textContent;",
            what="the server's refusal")
        assert bad_checksum in refusal
        await page.type_into("account-input", ALICE.lower())
        rows = await page.wait_for(f"const r = {POSITION_ROWS}; return r.length && r;", what="Alice's position")
        assert [row["id"] for row in rows] == [ALICE_BTC.position_id]


async def test_decimals_are_shown_without_float_rounding(tmp_path: Path, page: BrowserPage) -> None:
    config = steered_config(tmp_path, free_port())
    prices = SteeredPrices({feed(config, m): level for m, level in START_LEVELS.items()})
    async with serving(config, sources=steered_sources(prices, [])) as daemon:
        await page.open(daemon.http + "/")
        await page.wait_for("return window.perpstreamFormat", what="the page script")
        cases: list[tuple[str, list[Any], str]] = [
            ("formatDecimal", ["1.005", 2], "1.01"),  # a float rounds 1.005 down to 1.00
            ("formatDecimal", ["-1.005", 2], "\u22121.01"),
            ("formatDecimal", ["-0.004", 2], "0.00"),  # no negative zero
            ("formatDecimal", ["12345678901234567890.123456789", 3], "12,345,678,901,234,567,890.123"),
            ("formatDecimal", ["0.1", 20], "0.10000000000000000000"),
            ("formatDecimal", [None, 2], "\u2014"),
            ("formatPrice", ["64996.95017393"], "64,996.95"),
            ("formatPrice", ["150.04386726"], "150.044"),
            ("formatPrice", ["0.61234567"], "0.612346"),
            ("formatQuantity", ["13.583788"], "13.583788"),
            ("formatUsd", ["-3.78750845194664", {"plus": True}], "\u2212$3.79"),
            ("formatUsd", ["9636.31490244721128", {"plus": True}], "+$9,636.31"),
            ("formatPercent", ["0.0000000134499", 8], "0.00000134%"),
            ("formatAnnualRate", ["0.0000000134499"], "+0.0118% APR"),
            ("formatHealth", ["1.1999999"], "1.19"),  # truncated: never shown on the safe side
            ("formatHealth", ["1.2"], "1.20"),
            ("healthLevel", ["1.2"], "ok"),
            ("healthLevel", ["1.19999999999999999999"], "warning"),
            ("healthLevel", ["1.05"], "warning"),
            ("healthLevel", ["1.0499"], "critical"),
            ("healthLevel", ["1"], "critical"),
            ("healthLevel", ["0.99"], "liquidatable"),
            ("healthLevel", [None], "unknown"),
        ]
        shown = await page.js(
            "return arguments[0].map(([name, args]) => window.perpstreamFormat[name](...args));",
            [[name, args] for name, args, _ in cases])
        assert shown == [expected for _, _, expected in cases]
