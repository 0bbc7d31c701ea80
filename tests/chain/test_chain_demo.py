"""Demo trader, liquidator and funding keeper on a real chain."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, AsyncIterator

import trio

from perpstream.devchain import DemoLiquidator, DemoTrader, DevChain, FundingKeeper

from .helpers import BTC, ETH, SignedQuotes, d


async def test_trader_opens_modifies_and_closes_within_max_leverage(chain: DevChain) -> None:
    prices = {BTC: d("65000"), ETH: d("3400")}
    trader = DemoTrader(chain, [BTC, ETH], await SignedQuotes.of(chain, prices), seed=5, max_leverage=Decimal(50))
    for step in range(25):
        prices[BTC] += d("25") if step % 3 else d("-40")
        await trader.step()
    assert {"open", "modify", "close"} <= set(trader.actions)
    positions = await chain.open_positions_view()
    assert positions and {p.market_id for p in positions} == {BTC, ETH}
    leverages = [p.size * p.entry_price / p.collateral for p in positions]
    assert max(leverages) <= 50
    assert max(leverages) >= 20  # some risky ones, so that liquidations happen
    assert len({p.account for p in positions}) > 3


async def test_trader_forgets_positions_liquidated_under_it(chain: DevChain) -> None:
    prices = {BTC: d("100")}
    trader = DemoTrader(chain, [BTC], await SignedQuotes.of(chain, prices), seed=1, accounts=chain.traders[:1],
                        max_positions_per_account=1)
    assert await trader.step() == "open"
    (position,) = await chain.open_positions_view()
    crash_price = d("1") if position.is_long else d("10000")
    await chain.liquidate(chain.liquidator, position.position_id, price=crash_price)
    assert await trader.step() == "open"  # the liquidated one no longer counts
    assert trader.actions["refused"] == 0


async def test_restarted_trader_takes_over_open_positions(chain: DevChain) -> None:
    prices = {BTC: d("100")}
    options: dict[str, Any] = dict(seed=4, accounts=chain.traders[:1], max_positions_per_account=1)
    first = DemoTrader(chain, [BTC], await SignedQuotes.of(chain, prices), **options)
    assert await first.step() == "open"
    restarted = DemoTrader(chain, [BTC], await SignedQuotes.of(chain, prices), **options)
    await restarted.adopt_open_positions()
    assert await restarted.step() in ("modify", "close")  # at its limit: it works the old one
    assert len(await chain.open_positions_view()) <= 1


async def test_trader_waits_for_prices(chain: DevChain) -> None:
    trader = DemoTrader(chain, [BTC], lambda market_id: None, seed=1)
    assert await trader.step() is None
    assert await chain.open_positions_view() == []


async def test_trader_run_paces_itself(chain: DevChain) -> None:
    sleeps: list[float] = []
    stop = trio.CancelScope()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            stop.cancel()
        await trio.lowlevel.checkpoint()

    trader = DemoTrader(chain, [BTC], await SignedQuotes.of(chain, {BTC: d("100")}), seed=2, interval_s=(1.0, 3.0),
                        sleep=fake_sleep)
    with stop:
        await trader.run()
    assert len(sleeps) == 3 and all(1.0 <= s <= 3.0 for s in sleeps)
    assert sum(trader.actions.values()) == 3


async def test_liquidator_takes_what_the_chain_accepts(chain: DevChain) -> None:
    prices = {BTC: d("100")}
    trader = chain.traders[0]
    healthy = await chain.open_position(trader, BTC, is_long=True, size=d("1"), collateral=d("50"),
                                        entry_price=d("100"))
    risky = await chain.open_position(trader, BTC, is_long=True, size=d("1"), collateral=d("2"),
                                      entry_price=d("100"))
    healthy_id = healthy.opened_position_ids[0]
    risky_id = risky.opened_position_ids[0]
    prices[BTC] = d("98.4")  # risky: equity 0.4 < maintenance 0.492

    async def candidates() -> AsyncIterator[tuple[str, tuple[bytes, ...]]]:
        for position_id in (healthy_id, risky_id, risky_id, "0x" + "ab" * 32):
            yield position_id, ()  # no update of their own: the newest quote

    liquidator = DemoLiquidator(chain, await SignedQuotes.of(chain, prices), candidates=candidates())
    await liquidator.run()
    assert (liquidator.liquidated, liquidator.refused) == (1, 1)  # gone ones are skipped quietly
    assert liquidator.refusals == {"position is not liquidatable": 1}
    assert await chain.position(risky_id) is None
    assert await chain.position(healthy_id) is not None


async def test_funding_keeper_accrues_the_index_from_the_posted_rate(chain: DevChain) -> None:
    now = [1_700_000_000]
    prices = {BTC: d("60000"), ETH: None}
    rates = {BTC: d("0.0001"), ETH: d("0.0002")}
    keeper = FundingKeeper(chain, [BTC, ETH], rates.get, prices.get, clock=lambda: now[0])

    assert await keeper.post_all() == 1  # ETH has no price yet
    assert await chain.funding(BTC) == (d("0.0001"), d("0"), 1_700_000_000)

    now[0] += 1800
    rates[BTC] = d("-0.00005")
    await keeper.post_all()
    # index += 0.0001 * 60000 * 1800 / 3600 = 3
    assert await chain.funding(BTC) == (d("-0.00005"), d("3"), 1_700_001_800)

    # a restarted keeper continues from what the chain holds
    now[0] += 3600
    restarted = FundingKeeper(chain, [BTC], rates.get, prices.get, clock=lambda: now[0])
    await restarted.post_all()
    assert (await chain.funding(BTC))[1] == d("3") + d("-0.00005") * 60000
