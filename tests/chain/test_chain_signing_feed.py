"""The signing feed: every price carries an update the demo oracle accepts."""

from __future__ import annotations

import attrs
import trio

from perpstream.devchain import DevChain, OracleDomain, SigningFeed
from perpstream.devchain.oracle_update import decode_update
from perpstream.domain.prices import PriceUpdate, PythPrice
from perpstream.feeds import SimulatedFeed
from perpstream.feeds.gbm import MarketSpec

from .helpers import BTC, d

BTC_FEED = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"


def _update(price: int, publish_time: int, feed_id: str = BTC_FEED) -> PriceUpdate:
    pyth = PythPrice(price=price, conf=10, expo=-8, publish_time=publish_time)
    return PriceUpdate(feed_id=feed_id, price=pyth, ema_price=pyth, source="simulated")


def test_unsigned_while_no_chain_runs_then_signed_for_its_oracle() -> None:
    domain: list[OracleDomain | None] = [None]
    feed = SigningFeed(SimulatedFeed.random_walk([MarketSpec(BTC_FEED, d("65000"), d("1"))], seed=1),
                       lambda: domain[0])
    assert feed.sign(_update(100, 5)).update_data == ()
    assert feed.signed.newest(BTC_FEED) is None

    domain[0] = OracleDomain(chain_id=1, oracle_address="0x" + "ab" * 20)
    signed = feed.sign(_update(100, 6))
    (data,) = signed.update_data
    assert decode_update(data).price == signed.price
    assert feed.signed.newest(BTC_FEED) == signed
    feed.sign(_update(99, 4))  # an older price does not replace the newest
    assert feed.signed.newest(BTC_FEED) == signed
    hermes = attrs.evolve(_update(101, 7), update_data=(b"PNAU...",))
    (replaced,) = feed.sign(hermes).update_data  # the demo oracle verifies only its publisher
    assert decode_update(replaced).price == hermes.price


def test_an_unsignable_price_passes_unsigned() -> None:
    feed = SigningFeed(SimulatedFeed.random_walk([MarketSpec(BTC_FEED, d("65000"), d("1"))], seed=1),
                       lambda: OracleDomain(chain_id=1, oracle_address="0x" + "ab" * 20))
    assert feed.sign(_update(2**63, 5)).update_data == ()  # beyond the oracle's int64


async def test_the_simulated_feed_signed_for_the_chain_opens_a_position(chain: DevChain) -> None:
    feed = SigningFeed(SimulatedFeed.random_walk([MarketSpec(BTC_FEED, d("65000"), d("1"))], seed=3,
                                                 interval=0.01), lambda: chain.oracle_domain)
    delivered: list[PriceUpdate] = []
    got_one = trio.Event()

    async def on_update(update: PriceUpdate) -> None:
        delivered.append(update)
        got_one.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, on_update)
        await got_one.wait()
        nursery.cancel_scope.cancel()
    newest = feed.signed.newest(BTC_FEED)
    assert newest is not None and newest.update_data == delivered[-1].update_data
    receipt = await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("1000"),
                                        update_data=newest.update_data)
    (opened,) = receipt.events
    assert opened.entry_price == newest.price.value  # type: ignore[attr-defined]
