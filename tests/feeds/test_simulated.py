"""The simulated feed on trio's virtual clock."""

from __future__ import annotations

import itertools
import math
import statistics
from decimal import Decimal

import pytest
import trio

from perpstream.domain.prices import PriceUpdate
from perpstream.feeds import (
    OracleOrderFilter,
    REFERENCE_MARKETS,
    GbmPriceGenerator,
    MarketSpec,
    PriceFeed,
    ScriptedPriceGenerator,
    SimulatedFeed,
    StalenessTracker,
)

from .hermes_shapes import BTC, ETH, SOL

EPOCH = 1_717_632_000.0


def wall_clock() -> float:
    return EPOCH + trio.current_time()


class Recorder:
    def __init__(self) -> None:
        self.updates: list[PriceUpdate] = []
        self.times: list[float] = []

    async def __call__(self, update: PriceUpdate) -> None:
        self.updates.append(update)
        self.times.append(trio.current_time())

    def of(self, feed_id: str) -> list[PriceUpdate]:
        return [u for u in self.updates if u.feed_id == feed_id]


async def run_for(feed: SimulatedFeed, seconds: float) -> Recorder:
    recorder = Recorder()
    with trio.move_on_after(seconds):
        await feed.run(recorder)
    return recorder


def test_feeds_satisfy_the_price_feed_protocol() -> None:
    assert isinstance(SimulatedFeed.random_walk(REFERENCE_MARKETS), PriceFeed)


async def test_publishes_every_market_on_the_cadence(autojump_clock: trio.abc.Clock) -> None:
    feed = SimulatedFeed.random_walk(REFERENCE_MARKETS, seed=1, interval=0.4, wall_clock=wall_clock)
    recorder = await run_for(feed, 3.9)
    for market in REFERENCE_MARKETS:
        assert len(recorder.of(market.feed_id)) == 10
    tick_times = sorted(set(recorder.times))
    assert tick_times == pytest.approx([0.4 * k for k in range(10)])
    assert [u.publish_time for u in recorder.of(BTC)] == [int(EPOCH + 0.4 * k) for k in range(10)]


async def test_several_prices_a_second_share_publish_time_and_climb_in_slot(autojump_clock: trio.abc.Clock) -> None:
    # The embedded default takes the same path as Hermes: prices of one second
    # told apart by their slot, which an (publish_time, slot) order passes.
    feed = SimulatedFeed.random_walk(REFERENCE_MARKETS, seed=1, interval=0.4, wall_clock=wall_clock)
    btc = (await run_for(feed, 3.9)).of(BTC)
    slots = [u.slot for u in btc]
    assert None not in slots and slots == sorted(set(slots))  # type: ignore[type-var]
    assert max(len(list(group)) for _, group in itertools.groupby(btc, key=lambda u: u.publish_time)) >= 2
    assert OracleOrderFilter().accept_all(btc) == btc


async def test_started_after_the_first_prices(autojump_clock: trio.abc.Clock) -> None:
    feed = SimulatedFeed.random_walk(REFERENCE_MARKETS, seed=1, wall_clock=wall_clock)
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, recorder)
        assert {u.feed_id for u in recorder.updates} == {BTC, ETH, SOL}
        assert trio.current_time() == 0
        assert feed.status().connected
        nursery.cancel_scope.cancel()


async def test_same_seed_same_prices_other_seed_other_prices(autojump_clock: trio.abc.Clock) -> None:
    async def prices(seed: int) -> list[PriceUpdate]:
        feed = SimulatedFeed.random_walk(REFERENCE_MARKETS, seed=seed, wall_clock=lambda: EPOCH)
        return (await run_for(feed, 20)).updates

    first, again, other = await prices(42), await prices(42), await prices(43)
    assert first == again
    assert first != other


async def test_prices_look_like_pyth_prices(autojump_clock: trio.abc.Clock) -> None:
    feed = SimulatedFeed.random_walk(REFERENCE_MARKETS, seed=3, wall_clock=wall_clock)
    recorder = await run_for(feed, 120)
    for market in REFERENCE_MARKETS:
        updates = recorder.of(market.feed_id)
        assert updates[0].price.value == market.start_price
        for update in updates:
            assert update.source == "simulated"
            assert update.price.expo == update.ema_price.expo == -8
            assert isinstance(update.price.price, int) and update.price.price > 0
            band_bps = update.price.confidence / update.price.value * 10_000
            assert Decimal(market.confidence_bps) / 4 < band_bps < Decimal(market.confidence_bps) * 4
            assert update.ema_price.conf > 0
        bands = [u.price.confidence / u.price.value for u in updates]
        assert max(bands) > Decimal("1.5") * min(bands)  # the band's width varies, not just its scale

        # The one-hour EMA travels a small fraction of the distance the price does.
        def travel(values: list[Decimal]) -> Decimal:
            return sum((abs(b - a) for a, b in itertools.pairwise(values)), Decimal(0))

        price_travel = travel([u.price.value for u in updates])
        assert 0 < travel([u.ema_price.value for u in updates]) < price_travel / 100


def test_log_returns_have_the_configured_volatility() -> None:
    market = MarketSpec(BTC, "65000", 0.6)
    generator = GbmPriceGenerator([market], seed=9)
    dt = 0.4
    prices = [generator.tick(0, dt)[0].price.price for _ in range(20_001)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    expected = 0.6 * math.sqrt(dt / (365 * 24 * 3600))
    assert statistics.stdev(returns) == pytest.approx(expected, rel=0.03)
    assert abs(statistics.fmean(returns)) < 4 * expected / math.sqrt(len(returns))


def test_ema_follows_the_price_with_its_time_constant() -> None:
    generator = GbmPriceGenerator([MarketSpec(ETH, "3400", 0.75)], seed=2, ema_window=4.0)
    first = generator.tick(0, 1.0)[0]
    second = generator.tick(1, 1.0)[0]
    weight = 1 - math.exp(-1.0 / 4.0)
    expected = first.ema_price.value + Decimal(weight) * (second.price.value - first.ema_price.value)
    assert abs(second.ema_price.value - expected) < Decimal("0.00000002")


def test_market_spec_validation() -> None:
    with pytest.raises(ValueError):
        MarketSpec(BTC, "0", 0.6)
    with pytest.raises(ValueError):
        MarketSpec(BTC, "100", -0.1)
    with pytest.raises(ValueError):
        MarketSpec("btc", "100", 0.5)
    with pytest.raises(ValueError):
        GbmPriceGenerator([MarketSpec(BTC, "1", 0.1), MarketSpec("0x" + BTC, "2", 0.1)])


async def test_scripted_path_is_emitted_exactly_then_goes_quiet(autojump_clock: trio.abc.Clock) -> None:
    path = ["65000", "64000.5", "60000.12345678", "58000"]
    feed = SimulatedFeed.scripted({BTC: path, ETH: ["3400"]}, confidence_bps=5, interval=1.0, wall_clock=wall_clock)
    recorder = await run_for(feed, 10)
    btc = recorder.of(BTC)
    assert [u.price.value for u in btc] == [Decimal(p) for p in path]
    assert [u.publish_time for u in btc] == [int(EPOCH) + k for k in range(4)]
    assert btc[1].price.conf == 3_200_025_000  # 5 bps of 64000.5 at expo -8, exactly
    assert btc[1].ema_price == btc[1].price
    assert [u.price.value for u in recorder.of(ETH)] == [Decimal("3400")]
    assert max(recorder.times) == 3.0  # nothing after the script ran out


def test_scripted_prices_must_be_exact_at_the_exponent() -> None:
    with pytest.raises(ValueError):
        ScriptedPriceGenerator({BTC: ["1.000000001"]})


def test_scripted_generator_reports_exhaustion() -> None:
    generator = ScriptedPriceGenerator({BTC: ["1", "2"]})
    generator.tick(0, 0)
    assert not generator.exhausted
    generator.tick(1, 0)
    assert generator.exhausted and generator.tick(2, 0) == []


async def test_pause_goes_quiet_until_resumed(autojump_clock: trio.abc.Clock) -> None:
    feed = SimulatedFeed.random_walk([MarketSpec(SOL, "150", 1.0)], seed=5, interval=0.4, wall_clock=wall_clock)
    tracker = StalenessTracker([SOL], stale_after_ms=10_000)
    recorder = Recorder()

    async def on_update(update: PriceUpdate) -> None:
        tracker.observe(update)
        await recorder(update)

    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, on_update)
        await trio.sleep(1.0)
        feed.pause()
        assert feed.paused
        await trio.sleep(12.0)
        assert [f.feed_id for f in tracker.stale(wall_clock())] == [SOL]
        feed.resume()
        await trio.sleep(1.0)
        assert tracker.stale(wall_clock()) == []
        nursery.cancel_scope.cancel()

    quiet = [t for t in recorder.times if 1.0 < t < 13.0]
    assert quiet == []
    assert len([t for t in recorder.times if t >= 13.0]) >= 2


async def test_a_slow_consumer_skips_ticks_instead_of_bursting(autojump_clock: trio.abc.Clock) -> None:
    feed = SimulatedFeed.random_walk([MarketSpec(BTC, "65000", 0.6)], seed=1, interval=0.4, wall_clock=wall_clock)
    times: list[float] = []

    async def slow_once(update: PriceUpdate) -> None:
        times.append(trio.current_time())
        if len(times) == 1:
            await trio.sleep(2.0)

    with trio.move_on_after(3.0):
        await feed.run(slow_once)
    assert times == pytest.approx([0.0, 2.0, 2.4, 2.8])
