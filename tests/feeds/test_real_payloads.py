"""Hermes payloads as Pyth published them, decoded by the feed's own parser.

Each fixture's ``parsed`` part is checked against its signed ``binary`` part
(decoded with ``tests/feeds/pnau.py``), so the fixtures are known to be what
Pyth signed and not something this project wrote.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from perpstream.feeds import SSEParser, decode_hermes_payload

from .hermes_shapes import BTC, ETH
from .pnau import decode_accumulator_update
from .replay import REAL_LATEST, REAL_STREAM, REAL_UPDATE, derived_replay, real_document, real_stream_events

USDC = "c96458d393fe9deb7a7d63a0ac41e2898a67a7750dbd166673279e06c868df0a"  # the second feed of the /latest example


@pytest.mark.parametrize("document", [real_document(REAL_LATEST), real_document(REAL_UPDATE)]
                         + [json.loads(data) for data in real_stream_events()])
def test_every_fixture_is_what_pyth_signed(document: dict) -> None:
    (blob,) = document["binary"]["data"]
    signed = decode_accumulator_update(bytes.fromhex(blob))
    assert [m.feed_id for m in signed.messages] == [item["id"] for item in document["parsed"]]
    for message, item in zip(signed.messages, document["parsed"]):
        assert (str(message.price), str(message.conf), message.expo, message.publish_time) == (
            item["price"]["price"], item["price"]["conf"], item["price"]["expo"], item["price"]["publish_time"])
        assert str(message.ema_price) == item["ema_price"]["price"]
        assert item["metadata"]["slot"] == signed.slot
        assert item["metadata"]["prev_publish_time"] == message.prev_publish_time


def test_the_published_stream_capture_decodes_exactly() -> None:
    parser = SSEParser()
    events = parser.feed(REAL_STREAM.read_bytes())
    batches = [decode_hermes_payload(event.data, {BTC}) for event in events]
    first, second = (batch.updates[0] for batch in batches)
    assert first.price.value == Decimal("61632.60000000") and first.price.confidence == Decimal("32.68548079")
    assert (first.publish_time, first.slot) == (1714748300, 138886134)
    assert (second.publish_time, second.slot) == (1714748301, 138886135)
    assert first.update_data == (bytes.fromhex(json.loads(events[0].data)["binary"]["data"][0]),)
    assert first.update_data[0][:4] == b"PNAU" and second.order > first.order


def test_one_blob_covers_every_feed_of_the_answer() -> None:
    batch = decode_hermes_payload(REAL_LATEST.read_text(), {BTC, USDC})
    btc, usdc = batch.updates
    assert btc.update_data == usdc.update_data and len(btc.update_data) == 1
    assert usdc.price.value == Decimal("0.04959503") and btc.slot == usdc.slot == 138881186


def test_the_derived_replay_shares_seconds_between_slots_and_keeps_the_real_blob() -> None:
    replay = derived_replay(50)
    base = real_document(REAL_UPDATE)
    times = [json.loads(d)["parsed"][0]["price"]["publish_time"] for d in replay]
    assert max(times.count(t) for t in set(times)) >= 2
    assert all(json.loads(d)["binary"] == base["binary"] for d in replay)
    assert replay[0] == json.dumps(base, separators=(",", ":"))
    assert {item["id"] for d in replay for item in json.loads(d)["parsed"]} == {BTC, ETH}
