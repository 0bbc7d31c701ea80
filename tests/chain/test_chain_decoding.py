"""Log decoding: agrees with web3's own decoder; malformed logs are refused."""

from __future__ import annotations

from typing import Any

import attrs
import eth_abi
import pytest
from eth_utils import keccak
from web3 import Web3

from perpstream.chain import EventDecoder, LogDecodeError, PositionOpened, RawLog, load_artifact
from perpstream.chain.codec import dump_event, load_event
from perpstream.chain.units import from_wad
from perpstream.devchain import DevChain

from .helpers import BTC, d

ACCOUNT = "0x318b469BBa396AEc2C60342F9441be36A1945174"
OPENED_TOPIC = keccak(text="PositionOpened(bytes32,address,bytes32,bool,uint256,uint256,uint256,int256)")


def opened_log(**changes: Any) -> RawLog:
    log = RawLog(
        address=ACCOUNT,
        topics=(
            OPENED_TOPIC,
            b"\x07" * 32,
            bytes(12) + bytes.fromhex(ACCOUNT[2:]),
            BTC.encode().ljust(32, b"\0"),
        ),
        data=eth_abi.encode(
            ["bool", "uint256", "uint256", "uint256", "int256"],
            [True, 2 * 10**18, 150 * 10**18, 65_000_5 * 10**17, -3 * 10**15],
        ),
        block_number=9,
        block_hash="0x" + "ab" * 32,
        tx_hash="0x" + "cd" * 32,
        log_index=4,
    )
    return attrs.evolve(log, **changes)


def test_decodes_to_exact_decimals_and_canonical_ids() -> None:
    event = EventDecoder(load_artifact().abi).decode(opened_log())
    assert isinstance(event, PositionOpened)
    assert event.position_id == "0x" + "07" * 32
    assert event.account == ACCOUNT  # EIP-55
    assert event.market_id == BTC
    assert (event.is_long, event.size, event.collateral) == (True, d("2"), d("150"))
    assert (event.entry_price, event.entry_funding_index) == (d("65000.5"), d("-0.003"))
    assert (event.meta.block_number, event.meta.log_index) == (9, 4)


async def test_agrees_with_web3_on_every_event_kind(chain: DevChain) -> None:
    trader = chain.traders[0]
    position = dict(size=d("1"), collateral=d("5"), entry_price=d("100"))
    receipts = [
        await chain.update_funding(BTC, rate_per_hour=d("0.0001"), index=d("0.5"), timestamp=10),
        await chain.open_position(trader, BTC, is_long=True, **position),
    ]
    pid = receipts[-1].opened_position_ids[0]
    receipts.append(await chain.modify_position(trader, pid, size=d("1"), collateral=d("6"), price=d("100")))
    receipts.append(await chain.liquidate(chain.liquidator, pid, price=d("94")))
    receipts.append(await chain.open_position(trader, BTC, is_long=False, **position))
    pid = receipts[-1].opened_position_ids[0]
    receipts.append(await chain.close_position(trader, pid, exit_price=d("99")))

    raw_logs = await chain.client().get_logs(0, await chain.block_number(), chain.address)
    ours = [EventDecoder(chain.abi).decode(raw) for raw in raw_logs]
    assert ours == [e for r in receipts for e in r.events]

    web3_contract = Web3().eth.contract(abi=chain.abi)
    for raw, event in zip(raw_logs, ours):
        entry = {
            "address": raw.address, "topics": list(raw.topics), "data": raw.data,
            "blockNumber": raw.block_number, "blockHash": bytes.fromhex(raw.block_hash[2:]),
            "transactionHash": bytes.fromhex(raw.tx_hash[2:]), "transactionIndex": 0,
            "logIndex": raw.log_index,
        }
        decoded = web3_contract.events[type(event).__name__]().process_log(entry)
        for name, value in decoded["args"].items():
            ours_value = getattr(event, _snake(name))
            if isinstance(value, int) and not isinstance(value, bool) and name != "timestamp":
                assert ours_value == from_wad(value), name
            elif isinstance(value, bytes) and name == "marketId":
                assert ours_value == value.rstrip(b"\0").decode()
            elif isinstance(value, bytes):
                assert ours_value == "0x" + value.hex()
            else:
                assert ours_value == value, name


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"topics": (keccak(text="Transfer(address,address,uint256)"), b"\0" * 32)}, "unknown event"),
        ({"topics": ()}, "anonymous"),
        ({"topics": (OPENED_TOPIC, b"\x07" * 32)}, "expected 4 topics"),
        ({"data": b"\0" * 40}, "PositionOpened"),  # truncated
        ({"data": eth_abi.encode(["uint256"] * 5, [2, 1, 1, 1, 1])}, "PositionOpened"),  # bool = 2
        ({"topics": (OPENED_TOPIC, b"\x07" * 32, b"\xff" * 32, BTC.encode().ljust(32, b"\0"))},
         "PositionOpened"),
        ({"topics": (OPENED_TOPIC, b"\x07" * 32, bytes(32), b"\xff" + bytes(31))}, "PositionOpened"),
    ],
    ids=["foreign-event", "anonymous", "topic-count", "short-data", "bad-bool", "dirty-address",
         "bad-market"],
)
def test_malformed_logs_are_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(LogDecodeError, match=reason):
        EventDecoder(load_artifact().abi).decode(opened_log(**changes))


def test_decoder_refuses_an_abi_without_the_events() -> None:
    abi = [e for e in load_artifact().abi if e.get("name") != "FundingUpdated"]
    with pytest.raises(ValueError, match="FundingUpdated"):
        EventDecoder(abi)


def test_events_survive_the_store_codec() -> None:
    event = EventDecoder(load_artifact().abi).decode(opened_log())
    assert load_event(dump_event(event)) == event
