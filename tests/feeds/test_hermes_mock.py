"""HermesFeed against a scripted Hermes on trio's virtual clock: every delay is exact."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import httpx
import pytest
import trio

from perpstream.domain.prices import PriceUpdate
from perpstream.feeds import HermesConfig, HermesFeed, PriceFeed

from .fake_hermes import DROP, HANG, STALL, FakeHermes, Refuse
from .hermes_shapes import BLOB, BTC, ETH, KEEP_ALIVE, SOL, entry, error_event, payload, sse

STREAM = "/v2/updates/price/stream"
LATEST = "/v2/updates/price/latest"
EPOCH = 1_717_632_000.0


def config(**overrides: Any) -> HermesConfig:
    settings: dict[str, Any] = {
        "feed_ids": ("0x" + BTC, ETH),
        "base_url": "https://hermes.test",
        "backoff_initial": 1.0,
        "backoff_max": 4.0,
        "backoff_jitter": 0.0,
        "read_timeout": 1000.0,  # HANG means "quiet until the test ends" unless a test says otherwise
        "price_timeout": 1000.0,
    }
    settings.update(overrides)
    return HermesConfig(**settings)


def make_feed(hermes: FakeHermes, **overrides: Any) -> HermesFeed:
    return HermesFeed(config(**overrides), transport=hermes.transport, wall_clock=lambda: EPOCH + trio.current_time())


def seen(updates: list[PriceUpdate]) -> list[tuple[str, int, int]]:
    return [(u.feed_id, u.publish_time, u.price.price) for u in updates]


async def run_for(feed: HermesFeed, seconds: float) -> list[PriceUpdate]:
    updates: list[PriceUpdate] = []

    async def on_update(update: PriceUpdate) -> None:
        updates.append(update)

    with trio.move_on_after(seconds):
        await feed.run(on_update)
    return updates


def times(hermes: FakeHermes, path: str) -> list[float]:
    return [round(request.at, 6) for request in hermes.seen(path)]


async def test_gap_fill_comes_first_then_the_stream(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(
        streams=[[
            0.4, sse(payload(entry(BTC, 101, 1001), entry(ETH, 200, 1000))),  # ETH unchanged: a repeat
            0.4, sse(payload(entry(BTC, 101, 1001), entry(ETH, 201, 1001))),  # BTC unchanged
            HANG,
        ]],  # fmt: skip
        latest=[payload(entry(BTC, 100, 1000), entry(ETH, 200, 1000))],
    )
    feed = make_feed(hermes)
    updates: list[PriceUpdate] = []

    async def on_update(update: PriceUpdate) -> None:
        updates.append(update)

    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, on_update)
        assert seen(updates) == [(BTC, 1000, 100), (ETH, 1000, 200)]  # started() after the gap fill
        await trio.sleep(1)
        status = feed.status()
        nursery.cancel_scope.cancel()

    assert seen(updates) == [(BTC, 1000, 100), (ETH, 1000, 200), (BTC, 1001, 101), (ETH, 1001, 201)]
    assert all(u.source == "pyth-hermes" for u in updates)
    assert status.connected and status.reconnects == 0
    assert status.newest_publish_times == {BTC: 1001, ETH: 1001}
    assert status.last_update_wall == pytest.approx(EPOCH + 0.8)

    (stream,) = hermes.seen(STREAM)
    assert stream.params == [
        ("ids[]", BTC), ("ids[]", ETH), ("parsed", "true"), ("encoding", "hex"),
        ("ignore_invalid_price_ids", "true"), ("allow_unordered", "false"), ("benchmarks_only", "false"),
    ]  # fmt: skip
    assert stream.headers["accept"] == "text/event-stream"
    (latest,) = hermes.seen(LATEST)
    assert latest.params == [
        ("ids[]", BTC), ("ids[]", ETH), ("parsed", "true"), ("encoding", "hex"), ("ignore_invalid_price_ids", "true"),
    ]  # fmt: skip
    assert status.missing_feeds == ()


async def test_duplicates_and_older_updates_are_dropped(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(
        streams=[
            [
                sse(payload(entry(BTC, 555, 1000), entry(ETH, 200, 1000))),  # BTC repeats the gap fill
                sse(payload(entry(BTC, 99, 999), entry(ETH, 200, 1000))),  # BTC older, ETH unchanged
                sse(payload(entry(BTC, 101, 1001), entry(ETH, 200, 1000))),
                HANG,
            ]
        ],
        latest=[payload(entry(BTC, 100, 1000))],
    )
    updates = await run_for(make_feed(hermes), 5)
    assert seen(updates) == [(BTC, 1000, 100), (ETH, 1000, 200), (BTC, 1001, 101)]


async def test_failures_back_off_exponentially(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(
        streams=[Refuse(503), Refuse(503), [DROP], Refuse(502), [sse(payload(entry(BTC, 101, 1001))), HANG]],
    )
    feed = make_feed(hermes)
    updates = await run_for(feed, 60)
    # delays 1, 2, 4, then capped at 4
    assert times(hermes, STREAM) == [0, 1, 3, 7, 11]
    # the gap fill follows every connection that was accepted, including the one that then broke
    assert times(hermes, LATEST) == [3, 11]
    assert seen(updates) == [(BTC, 1001, 101)]
    status = feed.status()
    assert status.reconnects == 4
    assert status.last_error == "HTTP 502: unavailable"


async def test_status_between_attempts(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[Refuse(503, body="overloaded")])
    feed = make_feed(hermes)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.run, lambda update: trio.sleep(0))
        await trio.sleep(0.5)
        status = feed.status()
        nursery.cancel_scope.cancel()
    assert not status.connected
    assert status.last_error == "HTTP 503: overloaded"
    assert status.reconnects == 0  # the retry is scheduled, not yet made


async def test_a_healthy_stream_that_ends_is_followed_promptly(autojump_clock: trio.abc.Clock) -> None:
    # Hermes ends every stream after 24 h: that must not inherit the backoff of earlier failures.
    hermes = FakeHermes(
        streams=[
            Refuse(503),
            Refuse(503),
            [sse(payload(entry(BTC, 101, 1001)))],
            [sse(payload(entry(BTC, 102, 1002))), HANG],
        ],
    )
    updates = await run_for(make_feed(hermes, backoff_max=60.0), 60)
    assert times(hermes, STREAM) == [0, 1, 3, 4]  # not 3 + 4
    assert times(hermes, LATEST) == [3, 4]
    assert seen(updates) == [(BTC, 1001, 101), (BTC, 1002, 102)]


async def test_error_events_are_logged_and_the_stream_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # Hermes keeps sending after a Lagged or per-slot error: reconnecting would
    # only cost two requests of the rate budget and a gap.
    caplog.set_level(logging.INFO, logger="perpstream.feeds.hermes")
    hermes = FakeHermes(
        streams=[
            [
                sse(payload(entry(BTC, 101, 1001))),
                error_event("Error receiving update: Lagged(12)"),
                0.4,
                error_event("Error receiving update: Failed to get price feeds at slot 1"),
                0.4,
                sse(payload(entry(BTC, 103, 1003))),
                HANG,
            ],
        ],
    )
    feed = make_feed(hermes, feed_ids=(BTC,))
    updates = await run_for(feed, 30)
    assert seen(updates) == [(BTC, 1001, 101), (BTC, 1003, 103)]
    assert times(hermes, STREAM) == [0]
    errors = [r for r in caplog.records if "Lagged(12)" in r.getMessage()]
    assert [r.levelno for r in errors] == [logging.WARNING]
    assert "Failed to get price feeds" in (feed.status().last_error or "")
    assert feed.status().connected


async def test_the_24_hour_close_is_routine(autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="perpstream.feeds.hermes")
    hermes = FakeHermes(
        streams=[
            [sse(payload(entry(BTC, 101, 1001))), error_event("Connection timeout reached (24h)")],
            [sse(payload(entry(BTC, 102, 1002))), HANG],
        ],
        latest=[payload(entry(BTC, 100, 1000)), payload(entry(BTC, 101, 1001))],
    )
    feed = make_feed(hermes, feed_ids=(BTC,))
    updates = await run_for(feed, 30)
    assert seen(updates) == [(BTC, 1000, 100), (BTC, 1001, 101), (BTC, 1002, 102)]
    assert times(hermes, STREAM) == [0, 1]
    feed_logs = [r for r in caplog.records if r.name == "perpstream.feeds.hermes"]
    assert feed_logs and all(r.levelno == logging.INFO for r in feed_logs)
    assert any("24 h" in r.getMessage() for r in feed_logs)


async def test_malformed_events_are_skipped_without_dropping_the_stream(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    bad_entry = entry(BTC, 1, 1000)
    bad_entry["price"]["price"] = 6500.5
    hermes = FakeHermes(
        streams=[
            [
                sse(payload(entry(BTC, 101, 1001))),
                sse("{not json"),
                sse(payload(bad_entry, entry(ETH, 201, 1001))),
                sse('{"binary": {"encoding": "hex", "data": []}}'),
                sse(payload(entry(BTC, 102, 1002))),
                HANG,
            ]
        ],
    )
    feed = make_feed(hermes)
    updates = await run_for(feed, 10)
    assert seen(updates) == [(BTC, 1001, 101), (ETH, 1001, 201), (BTC, 1002, 102)]
    assert len(hermes.seen(STREAM)) == 1
    malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(malformed) == 3
    assert all(r.name == "perpstream.feeds.hermes" and r.levelno == logging.WARNING for r in malformed)


async def test_unconfigured_feed_ids_are_ignored_with_one_log_line(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    hermes = FakeHermes(
        streams=[
            [
                sse(payload(entry(SOL, 15_000, 1001), entry(BTC, 101, 1001))),
                sse(payload(entry(SOL, 15_001, 1002), entry(BTC, 102, 1002))),
                HANG,
            ]
        ],
    )
    updates = await run_for(make_feed(hermes), 10)
    assert seen(updates) == [(BTC, 1001, 101), (BTC, 1002, 102)]
    assert [r.getMessage() for r in caplog.records if SOL in r.getMessage()] == [
        f"ignoring updates for unconfigured feed {SOL}"
    ]


@pytest.mark.parametrize(
    ("placement", "name", "where", "expected"),
    [
        ("bearer", "x-api-key", "header", ("authorization", "Bearer s3cret")),
        ("header", "x-api-key", "header", ("x-api-key", "s3cret")),
        ("query", "api_key", "query", ("api_key", "s3cret")),
    ],
)
async def test_api_key_is_sent_where_configured(
    autojump_clock: trio.abc.Clock, placement: str, name: str, where: str, expected: tuple[str, str]
) -> None:
    hermes = FakeHermes(streams=[[HANG]])
    await run_for(make_feed(hermes, api_key="s3cret", api_key_placement=placement, api_key_name=name), 1)
    assert {request.path for request in hermes.requests} == {STREAM, LATEST}
    for request in hermes.requests:
        if where == "header":
            assert request.headers[expected[0]] == expected[1]
            assert all(value != "s3cret" for _, value in request.params)
        else:
            assert expected in request.params
            assert "authorization" not in request.headers
    assert "s3cret" not in repr(config(api_key="s3cret"))


async def test_no_api_key_sends_no_credentials(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[[HANG]])
    await run_for(make_feed(hermes), 1)
    assert all("authorization" not in request.headers for request in hermes.requests)


async def test_a_silent_stream_is_abandoned_after_the_read_timeout(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(
        streams=[
            [sse(payload(entry(BTC, 101, 1001))), 2.0, b": keep-alive\n\n", HANG],
            [sse(payload(entry(BTC, 102, 1002))), HANG],
        ],
    )
    feed = make_feed(hermes, read_timeout=5.0)
    updates = await run_for(feed, 12)
    # silence from t=2 (the keep-alive reset the timer) to t=7, then the prompt reconnect after 1 s
    assert times(hermes, STREAM) == [0, 8]
    assert seen(updates) == [(BTC, 1001, 101), (BTC, 1002, 102)]
    assert feed.status().last_error == "no data for 5.0 s"


async def test_rate_limit_retry_after_is_honoured(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[Refuse(429, {"Retry-After": "60"}, "Too Many Requests"), [HANG]])
    await run_for(make_feed(hermes), 100)
    assert times(hermes, STREAM) == [0, 60]


async def test_server_retry_field_is_a_floor_on_the_delay(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[[b"retry: 20000\n\n", sse(payload(entry(BTC, 101, 1001)))], [HANG]])
    await run_for(make_feed(hermes), 100)
    assert times(hermes, STREAM) == [0, 20]


async def test_started_waits_for_the_first_successful_connection(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[Refuse(503), Refuse(500), [HANG]])
    feed = make_feed(hermes)
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, lambda update: trio.sleep(0))
        started_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert started_at == pytest.approx(3)


async def test_a_failed_gap_fill_does_not_drop_the_stream(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(
        streams=[[sse(payload(entry(BTC, 101, 1001))), HANG]],
        latest=[Refuse(500, body="boom")],
    )
    feed = make_feed(hermes)
    updates = await run_for(feed, 10)
    assert seen(updates) == [(BTC, 1001, 101)]
    assert len(hermes.seen(STREAM)) == 1
    assert feed.status().last_error == "gap fill failed: HTTP 500"


@pytest.mark.parametrize("error", [RuntimeError("bug"), httpx.ReadError("its own I/O"), trio.TooSlowError()])
@pytest.mark.parametrize("during", ["gap fill", "stream"])
async def test_errors_raised_by_the_consumer_propagate(
    autojump_clock: trio.abc.Clock, error: Exception, during: str
) -> None:
    # Even errors that look like the feed's own network failures are the consumer's.
    update = payload(entry(BTC, 101, 1001))
    hermes = FakeHermes(
        streams=[[sse(update), HANG] if during == "stream" else [HANG]],
        latest=[update] if during == "gap fill" else [],
    )

    async def on_update(update: PriceUpdate) -> None:
        raise error

    with pytest.raises(type(error)):
        await make_feed(hermes).run(on_update)
    assert len(hermes.seen(STREAM)) == 1


async def test_jitter_is_seeded(autojump_clock: trio.abc.Clock) -> None:
    async def reconnect_times(seed: int) -> list[float]:
        hermes = FakeHermes(streams=[Refuse(503)] * 4)
        await run_for(make_feed(hermes, backoff_jitter=0.5, rng_seed=seed), 30)
        start = hermes.requests[0].at
        return [round(r.at - start, 9) for r in hermes.seen(STREAM)]

    first, again, other = await reconnect_times(5), await reconnect_times(5), await reconnect_times(6)
    assert first == again != other
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert all(0.5 * n <= gap <= n for gap, n in zip(gaps, [1, 2, 4, 4]))
    assert gaps != [1, 2, 4, 4]


async def test_a_server_that_never_answers_is_given_up_on(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[STALL, [sse(payload(entry(BTC, 101, 1001))), HANG]])
    feed = make_feed(hermes, connect_timeout=2.0, read_timeout=3.0)
    updates = await run_for(feed, 7)
    assert times(hermes, STREAM) == [0, 6]  # 2 + 3 s waiting for an answer, then a 1 s backoff
    assert seen(updates) == [(BTC, 1001, 101)]


async def test_a_gap_fill_that_never_answers_is_given_up_on(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[[sse(payload(entry(BTC, 101, 1001))), HANG]], latest=[STALL])
    feed = make_feed(hermes, connect_timeout=2.0)
    updates = await run_for(feed, 1005)
    assert seen(updates) == [(BTC, 1001, 101)]
    assert feed.status().last_error == "gap fill failed: no response"


def test_hermes_feed_satisfies_the_price_feed_protocol() -> None:
    assert isinstance(HermesFeed(config()), PriceFeed)


@pytest.mark.parametrize(
    "overrides",
    [
        {"feed_ids": ()},
        {"feed_ids": ("btc",)},
        {"read_timeout": 0.0},
        {"api_key_placement": "cookie"},
        {"backoff_jitter": 2.0},
        {"backoff_initial": 60.0},
    ],
)
def test_config_rejects_nonsense(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        config(**overrides)


def test_config_normalizes_and_deduplicates_feed_ids() -> None:
    assert config(feed_ids=("0x" + BTC.upper(), BTC, ETH)).feed_ids == (BTC, ETH)


async def test_every_price_of_a_second_arrives_in_slot_order(autojump_clock: trio.abc.Clock) -> None:
    # One event per ~400 ms slot, so two or three prices share a whole-second
    # publish_time; only the first of each second used to get through.
    events = [
        sse(payload(entry(BTC, 100, 1000, slot=500))),
        sse(payload(entry(BTC, 101, 1000, slot=501))),
        sse(payload(entry(BTC, 102, 1000, slot=502))),
        sse(payload(entry(BTC, 102, 1000, slot=502))),  # an exact repeat
        sse(payload(entry(BTC, 99, 1000, slot=499))),  # older: a late duplicate
        sse(payload(entry(BTC, 103, 1001, slot=503))),
    ]
    hermes = FakeHermes(streams=[[*events, HANG]], latest=[payload(entry(BTC, 101, 1000, slot=501))])
    updates = await run_for(make_feed(hermes, feed_ids=(BTC,)), 5)
    assert [(u.price.price, u.slot) for u in updates] == [(101, 501), (102, 502), (103, 503)]
    assert all(u.update_data == (bytes.fromhex(BLOB),) for u in updates)


async def test_unknown_and_delisted_feeds_are_reported_and_the_others_carry_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # With ignore_invalid_price_ids=true Hermes serves the ids it knows and leaves
    # the others out; a feed delisted while the stream is open is silently dropped.
    hermes = FakeHermes(
        streams=[[
            sse(payload(entry(BTC, 101, 1001), entry(ETH, 201, 1001))),
            sse(payload(entry(BTC, 102, 1002))),  # ETH delisted
            sse(payload(entry(BTC, 103, 1003))),
            HANG,
        ]],  # fmt: skip
        latest=[payload(entry(BTC, 100, 1000), entry(ETH, 200, 1000))],
    )
    feed = make_feed(hermes, feed_ids=(BTC, ETH, SOL))
    statuses = []

    async def on_update(update: PriceUpdate) -> None:
        statuses.append((update.price.price, feed.status().missing_feeds))

    with trio.move_on_after(5):
        await feed.run(on_update)
    assert statuses == [
        (100, (SOL,)), (200, (SOL,)), (101, (SOL,)), (201, (SOL,)), (102, (ETH, SOL)), (103, (ETH, SOL)),
    ]  # fmt: skip
    assert len(hermes.seen(STREAM)) == 1
    assert all(("ignore_invalid_price_ids", "true") in r.params for r in hermes.requests)
    warnings = [r.getMessage() for r in caplog.records if "does not serve" in r.getMessage()]
    assert len(warnings) == 2 and SOL in warnings[0] and ETH in warnings[1]


async def test_a_hermes_that_refuses_unknown_ids_is_asked_again_without_them(autojump_clock: trio.abc.Clock) -> None:
    # A server without ignore_invalid_price_ids answers 404 for the whole request.
    hermes = FakeHermes(
        streams=[Refuse(404, body=f"Price ids not found: 0x{SOL}"), [sse(payload(entry(BTC, 101, 1001))), HANG]],
        latest=[payload(entry(BTC, 100, 1000))],
    )
    feed = make_feed(hermes, feed_ids=(BTC, SOL))
    updates = await run_for(feed, 10)
    assert seen(updates) == [(BTC, 1000, 100), (BTC, 1001, 101)]
    first, second = hermes.seen(STREAM)
    assert ("ids[]", SOL) in first.params and ("ids[]", SOL) not in second.params
    assert feed.status().missing_feeds == (SOL,)


async def test_a_stream_of_nothing_but_keep_alives_is_left(autojump_clock: trio.abc.Clock) -> None:
    # Comments keep the connection open but carry no price: after price_timeout
    # without one, the feed reconnects (read_timeout alone never fires here).
    keep_alives = [step for _ in range(20) for step in (5.0, KEEP_ALIVE)]
    hermes = FakeHermes(
        streams=[[sse(payload(entry(BTC, 101, 1001))), *keep_alives, HANG], [sse(payload(entry(BTC, 102, 1002))), HANG]],
    )
    feed = make_feed(hermes, feed_ids=(BTC,), read_timeout=30.0, price_timeout=10.0)
    updates = await run_for(feed, 15)
    assert times(hermes, STREAM) == [0, 11]  # 10 s without a price, then a 1 s backoff
    assert seen(updates) == [(BTC, 1001, 101), (BTC, 1002, 102)]
    assert feed.status().reconnects == 1


async def test_rate_limit_without_retry_after_waits_the_documented_minute(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[Refuse(429, body="Too Many Requests"), Refuse(429, body="Too Many Requests"), [HANG]])
    await run_for(make_feed(hermes), 200)
    assert times(hermes, STREAM) == [0, 60, 120]


async def test_rate_limit_wait_is_configurable(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[Refuse(429), [HANG]])
    await run_for(make_feed(hermes, rate_limited_wait=90.0), 200)
    assert times(hermes, STREAM) == [0, 90]


async def test_retry_after_as_an_http_date_is_honoured(autojump_clock: trio.abc.Clock) -> None:
    hermes = FakeHermes(streams=[Refuse(429, {"Retry-After": "Thu, 06 Jun 2024 00:00:45 GMT"}), [HANG]])
    await run_for(make_feed(hermes), 100)  # the wall clock reads 2024-06-06 00:00:00 at t = 0
    assert times(hermes, STREAM) == [0, 45]


async def test_a_storm_of_drops_and_errors_stays_inside_the_request_budget(autojump_clock: trio.abc.Clock) -> None:
    # Each connection delivers a price (so the backoff resets) and then breaks at
    # once: without a budget that is two requests every backoff_initial seconds.
    storm: list[Any] = []
    for n in range(400):
        storm.append([sse(payload(entry(BTC, 100 + n, 1000 + n))), DROP] if n % 3 else Refuse(503))
    hermes = FakeHermes(streams=storm, latest=lambda: payload(entry(BTC, 1, 999)))
    feed = make_feed(hermes, feed_ids=(BTC,), backoff_initial=0.1, requests_per_minute=30.0, request_burst=6)
    await run_for(feed, 600)
    at = [request.at for request in hermes.requests]
    assert len(at) <= 6 + 30 * 10  # the burst, then 30 a minute for ten minutes
    for start in range(0, 600, 60):
        assert sum(start <= t < start + 60 for t in at) <= 6 + 30
    assert len(at) >= 30 * 10 * 0.9  # and the budget, not something else, is what limits it
