"""The price feed fails in every way a Hermes server can, under a running daemon.

Real sockets and real time: the daemon runs in this trio run with its
Hermes client pointed at a loopback Hermes (``hermes_server``) that is
first unreachable, then serves, stalls mid-stream, sends garbage with an
old price inside, and comes back. Alice's long is safe at 65,000 and
liquidatable at 64,000, so a warning or a ``liquidatable`` flag raised on
the old price would show.

The rest holds the look-alike to the real server's wire format, and the
feed (alone, or under the daemon) to what the real server does: unknown and
delisted feeds, error events that do not end the stream, the 24 h close,
streams of keep-alives only, Pyth's rate limit, and a replay of real
published payloads.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from perpstream.clock import WallClock
from perpstream.config import parse_config
from perpstream.domain.prices import PriceUpdate
from perpstream.feeds import HermesConfig, HermesFeed
from perpstream.services.store import MemoryPositionStore
from perpstream.sources import Sources, build_feed
from tests.feeds.replay import derived_replay, distinct_prices
from tests.integration.harness import ALICE, BTC, BTC_FEED, stored

from .clients import RunningDaemon, daemon_with
from .hermes_server import LATEST, STREAM, LoopbackHermes

pytestmark = pytest.mark.e2e

STALE_AFTER_MS = 1500


def config(tmp_path: Path, hermes: LoopbackHermes, **hermes_keys: Any) -> Any:
    return parse_config({
        "server": {"data_dir": str(tmp_path)},
        "feed": {"source": "hermes", "stale_after_ms": STALE_AFTER_MS, "hermes": {
            "base_url": hermes.url, "connect_timeout_s": 1.0, "read_timeout_s": 1.0,
            "backoff_initial_s": 0.1, "backoff_max_s": 0.4, **hermes_keys}},
        "streams": {"prices_interval_ms": 250, "positions_interval_ms": 500, "liquidations_interval_ms": 500},
        "markets": [{"id": BTC, "base": "BTC", "pyth_feed_id": BTC_FEED}],
    })


async def readiness(daemon: RunningDaemon) -> tuple[int, list[str]]:
    response = await daemon.get("/readyz")
    return response.status_code, response.json().get("reasons", [])


async def wait_ready(daemon: RunningDaemon, expected: int, reason: str = "", *, timeout: float = 10) -> list[str]:
    with trio.fail_after(timeout):
        while True:
            status, reasons = await readiness(daemon)
            if status == expected and all(reason in r for r in reasons[:1]):
                return reasons
            await trio.sleep(0.1)


async def feed_details(daemon: RunningDaemon) -> dict[str, Any]:
    tree = (await daemon.get("/debug/actors")).json()
    feed = next(c for c in tree["root"]["children"] if c["name"] == "feed")
    return {"restarts": feed["restarts"], **feed["details"]}


async def test_prices_go_stale_no_risk_is_raised_and_the_stream_recovers_by_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="perpstream.feeds.hermes")
    hermes = LoopbackHermes(BTC_FEED, price=65000)
    cfg = config(tmp_path, hermes, requests_per_minute=6000.0, request_burst=50)  # budgets: see below
    store = MemoryPositionStore()
    store.put(stored(1, ALICE, is_long=True, size="1", collateral="1000", entry="65000"))
    async with trio.open_nursery() as servers:
        sources = Sources(feed=build_feed(cfg, WallClock()), store=store)
        async with daemon_with(cfg, sources) as daemon, trio.open_nursery() as clients:
            prices = await daemon.listen(clients, f"/api/v1/ws/prices/{BTC}")
            alice = await daemon.listen(clients, f"/api/v1/ws/positions/{ALICE}")
            alerts = await daemon.listen(clients, "/api/v1/ws/liquidations")

            # 1. Hermes refuses connections: no price, and readiness says so.
            assert (await wait_ready(daemon, 503)) == [f"market {BTC} has no price yet"]
            with trio.fail_after(10):
                while (details := await feed_details(daemon))["reconnects"] < 3:
                    await trio.sleep(0.1)
            assert not details["connected"] and "ConnectError" in details["last_error"]

            # 2. It comes up: the gap fill, then the stream; fresh prices, ready.
            await hermes.up(servers)
            first = await prices.next("price_update", lambda m: not m["stale"])
            assert Decimal(first["price"]) == 65000
            await wait_ready(daemon, 200)
            reconnects_while_up = (await feed_details(daemon))["reconnects"]

            # 3. It stalls mid-stream: the price goes stale and readiness says why.
            hermes.set_mode("stall")
            stale = await prices.next("price_update", lambda m: m["stale"])
            assert stale["publish_time"] == hermes.last_publish_time and stale["age_ms"] > STALE_AFTER_MS
            reasons = await wait_ready(daemon, 503, f"market {BTC} price is stale")
            assert len(reasons) == 1
            await trio.sleep(1.5)  # long enough for the feed to give up on the silent stream

            # 4. It sends garbage, with a well-formed old price at a liquidatable level.
            hermes.old_price, hermes.old_publish_time = 64000, hermes.last_publish_time + 1
            garbage_at = trio.current_time()
            hermes.set_mode("garbage")
            old = await prices.next("price_update", lambda m: Decimal(m["price"]) == 64000)
            assert old["stale"] and old["publish_time"] == hermes.old_publish_time
            alert = await alerts.next(
                "liquidation_alert", lambda m: m["candidates"] and Decimal(m["candidates"][0]["mark_price"]) == 64000)
            [candidate] = alert["candidates"]
            assert Decimal(candidate["health_factor"]) < 1  # it would be liquidatable...
            assert candidate["liquidatable"] is False and alert["total_liquidatable"] == 0  # ...but the price is stale
            await alice.next("positions_update")
            details = await feed_details(daemon)
            assert details["restarts"] == 0
            assert details["reconnects"] > reconnects_while_up  # it gave up on the silent stream and came again

            # 5. It comes back (a new server: old connections are gone): the gap
            #    fill from /latest first, then the stream, fresh again and ready.
            hermes.down()
            hermes.set_mode("live")
            hermes.price, hermes.gap_fill_price = 65010, 65005
            back_at = trio.current_time()
            await hermes.up(servers)
            filled = await prices.next("price_update", lambda m: not m["stale"])
            assert Decimal(filled["price"]) == 65005 and hermes.requested(LATEST, since=back_at) >= 1
            streamed = await prices.next("price_update", lambda m: Decimal(m["price"]) == 65010)
            assert not streamed["stale"] and streamed["publish_time"] >= filled["publish_time"]
            await wait_ready(daemon, 200)

            # 6. A fresh price at the same level is liquidatable, and it is said:
            #    the silence before was the staleness rule, not a deaf market.
            fresh_at = trio.current_time()
            hermes.price = 64000
            warning = await alice.next("liquidation_warning")
            assert warning["severity"] == "liquidatable"
            alert = await alerts.next("liquidation_alert", lambda m: m["total_liquidatable"] == 1)
            assert alert["candidates"][0]["liquidatable"] is True

            details = await feed_details(daemon)
            clients.cancel_scope.cancel()
        servers.cancel_scope.cancel()

    assert details["restarts"] == 0 and details["connected"]
    skipped = {r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping malformed Hermes")}
    assert len(skipped) >= 6  # every kind of garbage was seen, and skipped
    # Nothing risk-related went out before the fresh liquidatable price existed.
    assert not [m for at, m in alice.frames if m["type"] == "liquidation_warning" and at < fresh_at]
    before = [m for at, m in alerts.frames if m["type"] == "liquidation_alert" and at < fresh_at]
    assert before and all(m["total_liquidatable"] == 0 for m in before)
    assert any(at > garbage_at for at, m in alerts.frames if m["type"] == "liquidation_alert")
    for listener in (prices, alice, alerts):
        assert listener.close_code is None and "resync" not in listener.types()
        assert [m["seq"] for _, m in listener.frames] == list(range(1, len(listener.frames) + 1))


ETH_MARKET, ETH_FEED = "eth-usdc-perp", "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace"
SOL_MARKET, SOL_FEED = "sol-usdc-perp", "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d"


async def test_one_unknown_feed_and_one_delisted_mid_stream_cost_only_their_own_markets(tmp_path: Path) -> None:
    # ETH is unknown to this Hermes from the start; SOL is delisted while the
    # stream is open and the connection then drops. BTC must keep its prices.
    hermes = LoopbackHermes(BTC_FEED, price=65000, others={SOL_FEED: 150})
    cfg = parse_config({
        "server": {"data_dir": str(tmp_path)},
        "feed": {"source": "hermes", "stale_after_ms": 3000, "hermes": {
            "base_url": hermes.url, "connect_timeout_s": 1.0, "read_timeout_s": 2.0,
            "backoff_initial_s": 0.1, "backoff_max_s": 0.4}},
        "markets": [{"id": BTC, "base": "BTC", "pyth_feed_id": BTC_FEED},
                    {"id": ETH_MARKET, "base": "ETH", "pyth_feed_id": ETH_FEED},
                    {"id": SOL_MARKET, "base": "SOL", "pyth_feed_id": SOL_FEED}],
    })  # fmt: skip
    async with trio.open_nursery() as servers:
        await hermes.up(servers)
        sources = Sources(feed=build_feed(cfg, WallClock()), store=MemoryPositionStore())
        async with daemon_with(cfg, sources) as daemon, trio.open_nursery() as clients:
            btc = await daemon.listen(clients, f"/api/v1/ws/prices/{BTC}")
            sol = await daemon.listen(clients, f"/api/v1/ws/prices/{SOL_MARKET}")
            await btc.next("price_update", lambda m: not m["stale"])
            await sol.next("price_update", lambda m: not m["stale"])
            assert (await feed_details(daemon))["missing_feeds"] == [ETH_FEED]

            hermes.delist(SOL_FEED)
            with trio.fail_after(5):
                while (await feed_details(daemon))["missing_feeds"] != [ETH_FEED, SOL_FEED]:
                    await trio.sleep(0.05)
            hermes.down()  # the reconnect asks for SOL (and ETH) again: no 404 for all
            dropped_at = trio.current_time()
            await hermes.up(servers)
            back = await btc.next("price_update", lambda m: not m["stale"] and m["publish_time"] > 0)
            assert back and trio.current_time() - dropped_at < 5
            details = await feed_details(daemon)
            status, reasons = await readiness(daemon)
            clients.cancel_scope.cancel()
        servers.cancel_scope.cancel()
    assert details["connected"] and details["missing_feeds"] == [ETH_FEED, SOL_FEED]
    # /readyz names the markets whose feeds the oracle does not serve, and why.
    assert status == 503
    assert [r for r in reasons if "does not serve its feed" in r] == [
        f"market {m}: the oracle does not serve its feed {f} (unknown or delisted); check markets.pyth_feed_id"
        for m, f in ((ETH_MARKET, ETH_FEED), (SOL_MARKET, SOL_FEED))
    ]
    assert hermes.refused == []  # ignore_invalid_price_ids: Hermes never refused the request


async def test_a_replay_of_real_payloads_reaches_the_markets_whole() -> None:
    # Real published BTC+ETH payload stretched to 150 slots (tests/feeds/replay.py):
    # every distinct price is delivered, in slot order, though slots share seconds.
    replay = derived_replay(150)
    hermes = LoopbackHermes(BTC_FEED, price=0, replay=replay, slot_seconds=0.02)
    feed = HermesFeed(HermesConfig(feed_ids=(BTC_FEED, ETH_FEED), base_url=hermes.url, price_timeout=30.0))
    expected = distinct_prices(replay)
    delivered: list[PriceUpdate] = []
    done = trio.Event()

    async def on_update(update: PriceUpdate) -> None:
        delivered.append(update)
        if hermes.replayed == len(replay) and len(delivered) >= len(expected):
            done.set()

    async with trio.open_nursery() as nursery:
        await hermes.up(nursery)
        nursery.start_soon(feed.run, on_update)
        with trio.fail_after(30):
            await done.wait()
        nursery.cancel_scope.cancel()
    got = {(u.feed_id, str(u.price.price), str(u.ema_price.price), u.publish_time) for u in delivered}
    assert got == expected and len(delivered) == len(expected)
    for feed_id in (BTC_FEED, ETH_FEED):
        orders = [u.order for u in delivered if u.feed_id == feed_id]
        assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert all(u.update_data and u.update_data[0][:4] == b"PNAU" for u in delivered)
    assert hermes.requested("/v2/updates/price/stream") == 1


# ---------------------------------------------------------------- the look-alike itself


async def raw_get(port: int, target: str, *, until: bytes = b"", limit: float = 3.0) -> bytes:
    """The raw bytes of one HTTP/1.1 answer, read until ``until`` appears or the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: hermes\r\n\r\n".encode())
    received = b""
    with trio.move_on_after(limit):
        while not (until and until in received):
            data = await stream.receive_some(65536)
            if not data:
                break
            received += data
    await stream.aclose()
    return received


async def test_the_look_alike_speaks_the_real_wire_format() -> None:
    hermes = LoopbackHermes(BTC_FEED, price=65000, others={ETH_FEED: 3400}, slot_seconds=0.05)
    async with trio.open_nursery() as nursery:
        await hermes.up(nursery)
        ids = f"ids[]={BTC_FEED}&ids[]=0x{ETH_FEED}"
        live = await raw_get(hermes.port, f"/v2/updates/price/stream?{ids}", until=b"\n\n\r\n", limit=3)
        missing = await raw_get(hermes.port, f"/v2/updates/price/stream?{ids}&ids[]={SOL_FEED}")
        ignored = await raw_get(
            hermes.port, f"/v2/updates/price/latest?{ids}&ids[]={SOL_FEED}&ignore_invalid_price_ids=true")
        hermes.set_mode("stall")
        hermes.keep_alive_s = 0.3  # Hermes's 15 s, shortened
        quiet = await raw_get(hermes.port, f"/v2/updates/price/stream?{ids}", until=b":\n\n", limit=3)
        hermes.set_mode("live")
        hermes.max_connection_s = 0.2
        closing = await raw_get(hermes.port, f"/v2/updates/price/stream?{ids}", limit=3)
        nursery.cancel_scope.cancel()

    head, _, body = live.partition(b"\r\n\r\n")
    assert b"content-type: text/event-stream" in head.lower() and b"cache-control: no-cache" in head.lower()
    size, _, rest = body.partition(b"\r\n")
    event = rest[: int(size, 16)]  # one chunk, one event
    assert event.startswith(b'data:{"binary":{"encoding":"hex","data":["'), event[:80]
    assert event.endswith(b"}]}\n\n"), event[-80:]
    document = json.loads(event[len(b"data:") : -2])
    assert [item["id"] for item in document["parsed"]] == [BTC_FEED, ETH_FEED]  # every requested feed
    assert list(document["parsed"][0]) == ["id", "price", "ema_price", "metadata"]
    assert list(document["parsed"][0]["metadata"]) == ["slot", "proof_available_time", "prev_publish_time"]
    assert missing.startswith(b"HTTP/1.1 404") and b"text/plain" in missing
    assert missing.endswith(f"Price ids not found: 0x{SOL_FEED}".encode())
    assert ignored.startswith(b"HTTP/1.1 200") and SOL_FEED.encode() not in ignored.partition(b"\r\n\r\n")[2]
    assert b"\r\n:\n\n\r\n" in quiet and b"data:" not in quiet  # keep-alives only
    assert b"event:error\ndata:Connection timeout reached (24h)\n\n" in closing and closing.endswith(b"0\r\n\r\n")


# ---------------------------------------------------------------- the feed against it, on real sockets


def live_feed(hermes: LoopbackHermes, **overrides: Any) -> HermesFeed:
    settings: dict[str, Any] = {
        "feed_ids": (BTC_FEED,), "base_url": hermes.url, "connect_timeout": 2.0, "read_timeout": 5.0,
        "price_timeout": 5.0, "backoff_initial": 0.05, "backoff_max": 0.2, "rng_seed": 3,
    }  # fmt: skip
    settings.update(overrides)
    return HermesFeed(HermesConfig(**settings))


async def run_feed(hermes: LoopbackHermes, feed: HermesFeed, *, until: Any, limit: float = 10.0) -> list[PriceUpdate]:
    """Run ``feed`` against ``hermes`` until ``until(updates)`` holds after an update or a request."""
    updates: list[PriceUpdate] = []
    done = trio.Event()

    async def on_update(update: PriceUpdate) -> None:
        updates.append(update)
        if until(updates):
            done.set()

    async def watch_requests() -> None:
        while not done.is_set():
            if until(updates):
                done.set()
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        await hermes.up(nursery)
        nursery.start_soon(feed.run, on_update)
        nursery.start_soon(watch_requests)
        with trio.fail_after(limit):
            await done.wait()
        nursery.cancel_scope.cancel()
    return updates


async def test_error_events_keep_the_stream_open(caplog: pytest.LogCaptureFixture) -> None:
    hermes = LoopbackHermes(BTC_FEED, price=65000, slot_seconds=0.05)
    feed = live_feed(hermes)
    injected = 0
    after: list[int] = []  # how many updates there were once all errors were sent

    def until(updates: list[PriceUpdate]) -> bool:
        # The price stays put, so the feed passes one update per new second.
        nonlocal injected
        if updates and injected < 10:
            injected += 1
            hermes.inject_error(f"Error receiving update: Lagged({injected})")
        elif injected == 10 and not after:
            after.append(len(updates))
        return bool(after) and len(updates) >= after[0] + 2

    await run_feed(hermes, feed, until=until)
    assert hermes.requested(STREAM) == 1 and feed.status().reconnects == 0
    assert sum("Lagged(" in r.getMessage() for r in caplog.records) == 10


async def test_the_24_hour_close_is_followed_by_a_prompt_reconnect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="perpstream.feeds.hermes")
    hermes = LoopbackHermes(BTC_FEED, price=65000, slot_seconds=0.05, max_connection_s=0.6)
    feed = live_feed(hermes)
    await run_feed(hermes, feed, until=lambda updates: hermes.requested(STREAM) >= 3)
    closes = [r for r in caplog.records if "Connection timeout reached (24h)" in r.getMessage()]
    assert closes and all(r.levelno == logging.INFO for r in closes)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_look_alike_sending_only_keep_alives_is_left() -> None:
    hermes = LoopbackHermes(BTC_FEED, price=65000, slot_seconds=0.05, keep_alive_s=0.1)
    feed = live_feed(hermes, read_timeout=5.0, price_timeout=0.8)
    stalled_at: list[float] = []

    def until(updates: list[PriceUpdate]) -> bool:
        if updates and not stalled_at:
            stalled_at.append(trio.current_time())
            hermes.set_mode("stall")
        return bool(stalled_at) and hermes.requested(STREAM) >= 2

    await run_feed(hermes, feed, until=until)
    assert "no price for 0.8 s" in (feed.status().last_error or "")


@pytest.mark.parametrize("budgeted", [True, False])
async def test_reconnects_stay_inside_the_servers_rate_limit(budgeted: bool) -> None:
    # Pyth's limit scaled down: 6 requests a second, then 429 for 2 s. Streams
    # that close at once (the 24 h close, early) reset the backoff every time.
    hermes = LoopbackHermes(BTC_FEED, price=65000, slot_seconds=0.02, max_connection_s=0.05, rate_limit=(6, 1.0, 2.0))
    budget = {"requests_per_minute": 120.0, "request_burst": 3} if budgeted else {"requests_per_minute": 1e9,
                                                                                   "request_burst": 10**6}
    feed = live_feed(hermes, rate_limited_wait=1.5, **budget)
    await run_feed(hermes, feed, until=lambda updates: len(hermes.requests) >= 16, limit=15)
    if budgeted:
        assert hermes.refused == []
    else:
        refusals = [at for at, status in hermes.refused if status == 429]
        assert refusals  # backoff alone runs into the limit...
        first = refusals[0]
        later = [at for at, _ in hermes.requests if first < at < first + 1.4]
        assert later == [] or all(at - first < 0.01 for at in later)  # ...and then waits rate_limited_wait


async def test_the_replay_through_the_daemon_every_price_reaches_a_market_and_the_newest_is_published(
    tmp_path: Path,
) -> None:
    replay = derived_replay(150)
    expected = distinct_prices(replay)
    final_btc = next(item for item in json.loads(replay[-1])["parsed"] if item["id"] == BTC_FEED)["price"]
    hermes = LoopbackHermes(BTC_FEED, price=0, replay=replay, slot_seconds=0.02)
    cfg = parse_config({
        "server": {"data_dir": str(tmp_path)},
        "feed": {"source": "hermes", "stale_after_ms": 30_000, "hermes": {"base_url": hermes.url}},
        "streams": {"prices_interval_ms": 100},
        "markets": [{"id": BTC, "base": "BTC", "pyth_feed_id": BTC_FEED},
                    {"id": ETH_MARKET, "base": "ETH", "pyth_feed_id": ETH_FEED}],
    })  # fmt: skip
    async with trio.open_nursery() as servers:
        await hermes.up(servers)
        sources = Sources(feed=build_feed(cfg, WallClock()), store=MemoryPositionStore())
        async with daemon_with(cfg, sources) as daemon, trio.open_nursery() as clients:
            prices = await daemon.listen(clients, f"/api/v1/ws/prices/{BTC}")
            newest = await prices.next(
                "price_update", lambda m: Decimal(m["price"]) == Decimal(f"{final_btc['price']}E{final_btc['expo']}"),
                timeout=20)
            with trio.fail_after(5):
                while (details := await feed_details(daemon))["delivered"] < len(expected):
                    await trio.sleep(0.05)
            clients.cancel_scope.cancel()
        servers.cancel_scope.cancel()
    assert details["delivered"] == len(expected) and details["dropped"] == 0
    assert newest["publish_time"] == final_btc["publish_time"]
    published = [m for _, m in prices.frames if m["type"] == "price_update"]
    assert [m["publish_time"] for m in published] == sorted(m["publish_time"] for m in published)
