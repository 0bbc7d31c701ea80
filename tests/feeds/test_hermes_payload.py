from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from perpstream.domain.prices import PythPrice
from perpstream.feeds import HermesPayloadError, decode_hermes_payload

from .hermes_shapes import BTC, ETH, SOL, entry, payload

KNOWN = frozenset({BTC, ETH})


def test_decodes_hermes_entries_exactly() -> None:
    batch = decode_hermes_payload(payload(entry(BTC, 6_501_234_000_000, 1_717_632_000)), KNOWN)
    (update,) = batch.updates
    assert update.feed_id == BTC
    assert update.source == "pyth-hermes"
    assert update.price == PythPrice(price=6_501_234_000_000, conf=3_100_000, expo=-8, publish_time=1_717_632_000)
    assert update.ema_price == PythPrice(6_501_233_999_000, 3_100_007, -8, 1_717_632_000)
    assert update.price.value == Decimal("65012.34")
    assert batch.unknown_feed_ids == () and batch.malformed == ()


def test_accepts_bytes_and_keeps_entry_order() -> None:
    raw = payload(entry(ETH, 340_000_000_000, 10), entry(BTC, 6_500_000_000_000, 11)).encode()
    assert [u.feed_id for u in decode_hermes_payload(raw, KNOWN).updates] == [ETH, BTC]


def test_integers_beyond_double_precision_stay_exact() -> None:
    huge = 2**63 + 1
    batch = decode_hermes_payload(payload(entry(BTC, huge, 10, conf=huge)), KNOWN)
    assert batch.updates[0].price.price == huge and batch.updates[0].price.conf == huge


def test_0x_prefixed_and_upper_case_ids_are_normalized() -> None:
    batch = decode_hermes_payload(payload(entry("0x" + BTC.upper(), 1, 10)), KNOWN)
    assert batch.updates[0].feed_id == BTC


def test_unknown_feed_ids_are_reported_not_returned() -> None:
    batch = decode_hermes_payload(payload(entry(SOL, 15_000_000_000, 10), entry(BTC, 1, 10)), KNOWN)
    assert [u.feed_id for u in batch.updates] == [BTC]
    assert batch.unknown_feed_ids == (SOL,)


def _broken(mutate: Any) -> dict[str, Any]:
    item = entry(BTC, 6_500_000_000_000, 10)
    mutate(item)
    return item


MALFORMED_ENTRIES = {
    "not an object": "oops",
    "id missing": _broken(lambda e: e.pop("id")),
    "id not hex": _broken(lambda e: e.update(id="zz" * 32)),
    "id too short": _broken(lambda e: e.update(id=BTC[:-2])),
    "price missing": _broken(lambda e: e.pop("price")),
    "ema missing": _broken(lambda e: e.pop("ema_price")),
    "price is float text": _broken(lambda e: e["price"].update(price="6500.5")),
    "price is a float": _broken(lambda e: e["price"].update(price=6500.5)),
    "price is bool": _broken(lambda e: e["price"].update(price=True)),
    "conf negative": _broken(lambda e: e["price"].update(conf="-1")),
    "conf has spaces": _broken(lambda e: e["price"].update(conf=" 12")),
    "expo is text": _broken(lambda e: e["price"].update(expo="-8")),
    "expo is bool": _broken(lambda e: e["price"].update(expo=False)),
    "publish_time is text": _broken(lambda e: e["price"].update(publish_time="1717632000")),
    "publish_time missing": _broken(lambda e: e["ema_price"].pop("publish_time")),
    "publish_time negative": _broken(lambda e: e["price"].update(publish_time=-5)),
    "slot is text": _broken(lambda e: e["metadata"].update(slot="138886134")),
    "slot negative": _broken(lambda e: e["metadata"].update(slot=-1)),
    "metadata not an object": _broken(lambda e: e.update(metadata=[])),
}


@pytest.mark.parametrize("bad", MALFORMED_ENTRIES.values(), ids=MALFORMED_ENTRIES.keys())
def test_a_malformed_entry_is_reported_and_the_rest_still_decode(bad: Any) -> None:
    document = json.loads(payload(entry(ETH, 340_000_000_000, 10)))
    document["parsed"].insert(0, bad)
    batch = decode_hermes_payload(json.dumps(document), KNOWN)
    assert [u.feed_id for u in batch.updates] == [ETH]
    (error,) = batch.malformed
    assert isinstance(error, HermesPayloadError)
    assert error.index == 0
    assert str(error).startswith("parsed[0]: ")


def test_negative_price_is_legal() -> None:
    # Some Pyth feeds (rates, spreads) can go below zero; only conf must not.
    batch = decode_hermes_payload(payload(entry(BTC, -5, 10)), KNOWN)
    assert batch.updates[0].price.price == -5


@pytest.mark.parametrize(
    "raw",
    ["{not json", "[]", '"text"', '{"binary": {"encoding": "hex", "data": []}}', '{"parsed": {}}', b"\xff\xfe"],
)
def test_unusable_payload_raises_a_typed_error(raw: str | bytes) -> None:
    with pytest.raises(HermesPayloadError) as info:
        decode_hermes_payload(raw, KNOWN)
    assert info.value.index is None


def test_slot_and_update_data_come_with_every_update() -> None:
    # One signed blob covers all feeds of the event: each update carries it.
    document = payload(entry(BTC, 1, 10, slot=138_886_134), entry(ETH, 2, 10, slot=138_886_134), blobs=("504e4155", "0xabcd"))
    btc, eth = decode_hermes_payload(document, KNOWN).updates
    assert btc.slot == eth.slot == 138_886_134 and btc.order == (10, 138_886_134)
    assert btc.update_data == eth.update_data == (b"PNAU", b"\xab\xcd")


def test_base64_binary_is_decoded_too() -> None:
    document = json.loads(payload(entry(BTC, 1, 10)))
    document["binary"] = {"encoding": "base64", "data": ["UE5BVQ=="]}
    assert decode_hermes_payload(json.dumps(document), KNOWN).updates[0].update_data == (b"PNAU",)


@pytest.mark.parametrize("metadata", [None, {"slot": None, "proof_available_time": None, "prev_publish_time": None}])
def test_a_slot_hermes_does_not_know_is_none(metadata: Any) -> None:
    item = entry(BTC, 1, 10)
    item["metadata"] = metadata
    (update,) = decode_hermes_payload(payload(item), KNOWN).updates
    assert update.slot is None and update.order == (10, -1)


@pytest.mark.parametrize(
    "binary",
    [{"encoding": "hex", "data": ["not hex"]}, {"encoding": "base64", "data": ["***"]}, {"encoding": "hex", "data": [7]},
     {"encoding": "rot13", "data": ["aa"]}, {"encoding": "hex", "data": "aa"}, "aa"],
)
def test_an_unreadable_binary_is_reported_and_the_prices_still_decode(binary: Any) -> None:
    document = json.loads(payload(entry(BTC, 1, 10)))
    document["binary"] = binary
    batch = decode_hermes_payload(json.dumps(document), KNOWN)
    assert [u.update_data for u in batch.updates] == [()] and batch.malformed == ()
    assert batch.binary_error is not None and "binary" in str(batch.binary_error)
