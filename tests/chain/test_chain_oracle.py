"""The demo oracle and the exchange's use of it, on the embedded EVM.

The oracle has Pyth's interface and error selectors; the exchange takes
prices from it only. What a caller can produce — its own signatures,
tampered, replayed, stale or older genuine updates, another feed's — never
makes a healthy position liquidatable.
"""

from __future__ import annotations

import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from perpstream.devchain import DemoPublisher, DevChain, OracleDomain, TransactionReverted
from perpstream.devchain.oracle_update import decode_update, update_digest
from perpstream.domain.prices import PythPrice

from .helpers import BTC, ETH, d

PRICE = PythPrice(price=6_512_345_678_901, conf=1_234_567, expo=-8, publish_time=1_700_000_000)


async def open_long(chain: DevChain, *, collateral: str = "10", price: str = "100") -> str:
    # long 2 @ 100 with 10 collateral: equity = 10 + 2 (P - 100); maintenance = 2P * 0.005
    receipt = await chain.open_position(
        chain.traders[0], BTC, is_long=True, size=d("2"), collateral=d(collateral), entry_price=d(price)
    )
    return receipt.opened_position_ids[0]


def test_the_digest_is_eip712_of_the_price_in_the_oracle_domain() -> None:
    domain = OracleDomain(chain_id=131277322940537, oracle_address="0x" + "ab" * 20)
    feed = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"
    typed = encode_typed_data(full_message={
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"},
            ],
            "PriceUpdate": [
                {"name": "id", "type": "bytes32"}, {"name": "price", "type": "int64"},
                {"name": "conf", "type": "uint64"}, {"name": "expo", "type": "int32"},
                {"name": "publishTime", "type": "uint64"},
            ],
        },
        "primaryType": "PriceUpdate",
        "domain": {"name": "PerpstreamDemoOracle", "version": "1", "chainId": domain.chain_id,
                   "verifyingContract": domain.oracle_address},
        "message": {"id": bytes.fromhex(feed), "price": PRICE.price, "conf": PRICE.conf, "expo": PRICE.expo,
                    "publishTime": PRICE.publish_time},
    })
    assert update_digest(domain, feed, PRICE) == keccak(b"\x19" + typed.version + typed.header + typed.body)


def test_an_update_decodes_to_what_was_signed() -> None:
    domain = OracleDomain(chain_id=1, oracle_address="0x" + "cd" * 20)
    negative = PythPrice(price=-5, conf=0, expo=-2, publish_time=7)
    data = DemoPublisher().sign(domain, "0x" + "11" * 32, negative)
    decoded = decode_update(data)
    assert (decoded.feed_id, decoded.price) == ("11" * 32, negative)
    assert decoded.v in (27, 28)
    with pytest.raises(ValueError):
        decode_update(data[:-1])


async def test_the_oracle_answers_like_pyth(chain: DevChain) -> None:
    assert await chain.oracle_price(BTC) is None  # PriceFeedNotFound
    head = await chain.head_timestamp()
    await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("1000"),
                              update_data=[await chain.price_update(BTC, PRICE, publish_time=head + 1)])
    assert await chain.oracle_price(BTC) == PythPrice(PRICE.price, PRICE.conf, PRICE.expo, head + 1)
    # An older update is skipped, not refused; the newer price stays.
    await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("1000"),
                              update_data=[await chain.price_update(BTC, d("1"), publish_time=head)])
    stored = await chain.oracle_price(BTC)
    assert stored is not None and stored.price == PRICE.price


async def test_a_price_older_than_max_age_is_refused(chain: DevChain) -> None:
    head = await chain.head_timestamp()
    stale = await chain.price_update(BTC, d("100"), publish_time=head - 61)
    with pytest.raises(TransactionReverted, match="StalePrice"):
        await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("10"),
                                  update_data=[stale])
    pid = await open_long(chain)
    await chain.advance_time(120)  # the stored price ages past 60 s
    with pytest.raises(TransactionReverted, match="StalePrice"):
        await chain.close_position(chain.traders[0], pid)
    await chain.close_position(chain.traders[0], pid, exit_price=d("100"))  # a fresh one is fine


async def test_an_update_of_another_signer_or_tampered_is_refused(chain: DevChain) -> None:
    pid = await open_long(chain)
    head = await chain.head_timestamp()
    crash = PythPrice(price=9_000_000_000, conf=0, expo=-8, publish_time=head + 1)  # 90: liquidatable
    forged = DemoPublisher(keccak(b"someone else")).sign(chain.oracle_domain, chain.feed_id(BTC), crash)
    with pytest.raises(TransactionReverted, match="InvalidUpdateDataSource"):
        await chain.liquidate(chain.liquidator, pid, update_data=[forged])
    genuine = chain.sign_price(BTC, d("100"), head + 1)
    tampered = genuine[:36] + (9_000_000_000).to_bytes(8, "big", signed=True) + genuine[44:]
    with pytest.raises(TransactionReverted, match="InvalidUpdateDataSource"):
        await chain.liquidate(chain.liquidator, pid, update_data=[tampered])
    with pytest.raises(TransactionReverted, match="InvalidUpdateData"):
        await chain.liquidate(chain.liquidator, pid, update_data=[genuine[:-1]])
    malleable = genuine[:97] + (_SECP256K1_N - int.from_bytes(genuine[97:], "big")).to_bytes(32, "big")
    with pytest.raises(TransactionReverted, match="InvalidUpdateData"):
        await chain.liquidate(chain.liquidator, pid, update_data=[malleable])
    assert await chain.position(pid) is not None


_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.mark.parametrize("domain_of", [
    lambda chain: OracleDomain(chain_id=1, oracle_address=chain.oracle_address),  # mainnet
    lambda chain: OracleDomain(chain_id=chain.oracle_domain.chain_id, oracle_address="0x" + "42" * 20),
], ids=["another-chain-id", "another-oracle"])
async def test_an_update_signed_for_another_deployment_is_refused(chain: DevChain, domain_of: object) -> None:
    pid = await open_long(chain)
    head = await chain.head_timestamp()
    crash = PythPrice(price=9_000_000_000, conf=0, expo=-8, publish_time=head + 1)
    replayed = DemoPublisher().sign(domain_of(chain), chain.feed_id(BTC), crash)  # type: ignore[operator]
    with pytest.raises(TransactionReverted, match="InvalidUpdateDataSource"):
        await chain.liquidate(chain.liquidator, pid, update_data=[replayed])
    assert await chain.position(pid) is not None
    # the very price, signed for this oracle, liquidates
    genuine = DemoPublisher().sign(chain.oracle_domain, chain.feed_id(BTC), crash)
    assert (await chain.liquidate(chain.liquidator, pid, update_data=[genuine])).events


async def test_no_update_a_caller_can_produce_liquidates_a_healthy_position(chain: DevChain) -> None:
    head = await chain.head_timestamp()
    # A genuine but old liquidatable price, captured before the position opened.
    old_crash = chain.sign_price(BTC, d("90"), head - 5)
    eth_crash = chain.sign_price(ETH, d("1"), head + 1)
    pid = await open_long(chain)  # stored BTC price: 100, healthy
    mine = DemoPublisher(keccak(b"liquidator's own key"))
    attempts = {
        "no update": [],
        "an older genuine update": [old_crash],
        "another market's update": [eth_crash],
        "its own signature": [mine.sign(chain.oracle_domain, chain.feed_id(BTC),
                                        PythPrice(9_000_000_000, 0, -8, head + 2))],
        "the stored price again": [chain.sign_price(BTC, d("100"), head + 2)],
    }
    for what, update_data in attempts.items():
        with pytest.raises(TransactionReverted):
            await chain.liquidate(chain.liquidator, pid, update_data=update_data)
        assert await chain.position(pid) is not None, what


async def test_a_genuine_update_of_a_liquidatable_price_liquidates(chain: DevChain) -> None:
    pid = await open_long(chain)
    receipt = await chain.liquidate(chain.liquidator, pid, price=d("95.4"))  # equity 0.8 < 0.954
    (event,) = receipt.events
    assert (event.price, event.reward) == (d("95.4"), d("0.8"))  # type: ignore[union-attr]
    assert await chain.position(pid) is None


async def test_a_market_without_a_feed_or_price_is_refused(chain: DevChain) -> None:
    with pytest.raises(TransactionReverted, match="PriceFeedNotFound"):
        await chain.open_position(chain.traders[0], BTC, is_long=True, size=d("1"), collateral=d("10"))
    with pytest.raises(TransactionReverted, match="market has no price feed"):
        await chain.open_position(chain.traders[0], "doge-usdc-perp", is_long=True, size=d("1"),
                                  collateral=d("10"), update_data=[chain.sign_price(BTC, d("1"), 1)])
