"""Reading Pyth's accumulator update (``binary.data``), to check fixtures against themselves.

The signed blob Hermes sends holds the very prices its ``parsed`` part
describes: a Wormhole VAA whose payload names the Pythnet slot and Merkle
root, then one price-feed message per feed with its proof. Decoding it lets
the tests show that a fixture's ``parsed`` entries, or any derived from the
blob, are what Pyth signed. The layout follows ``pythnet_sdk``'s ``wire``
module (``PNAU`` v1, ``WormholeMerkle`` updates, big-endian integers).
"""

from __future__ import annotations

import struct

import attrs

__all__ = ["AccumulatorUpdate", "PriceMessage", "decode_accumulator_update"]


@attrs.frozen
class PriceMessage:
    feed_id: str
    price: int
    conf: int
    expo: int
    publish_time: int
    prev_publish_time: int
    ema_price: int
    ema_conf: int


@attrs.frozen
class AccumulatorUpdate:
    slot: int
    vaa_timestamp: int
    messages: tuple[PriceMessage, ...]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError(f"accumulator update ends early at byte {self.at}")
        chunk, self.at = self.data[self.at : self.at + n], self.at + n
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(">" + fmt, self.take(struct.calcsize(">" + fmt)))


def decode_accumulator_update(blob: bytes) -> AccumulatorUpdate:
    r = _Reader(blob)
    if r.take(4) != b"PNAU":
        raise ValueError("not an accumulator update (no PNAU magic)")
    major, _minor, trailing = r.unpack("BBB")
    if major != 1:
        raise ValueError(f"accumulator update major version {major}, expected 1")
    r.take(trailing)
    (update_type,) = r.unpack("B")
    if update_type != 0:
        raise ValueError(f"update type {update_type}, expected 0 (WormholeMerkle)")
    (vaa_length,) = r.unpack("H")
    vaa = _Reader(r.take(vaa_length))
    _version, _guardian_set, signatures = vaa.unpack("BIB")
    vaa.take(66 * signatures)
    timestamp, _nonce, _chain = vaa.unpack("IIH")
    vaa.take(32 + 8 + 1)  # emitter address, sequence, consistency level
    if vaa.take(4) != b"AUWV":
        raise ValueError("VAA payload is not a Pythnet Merkle root (no AUWV magic)")
    _root_type, slot, _ring_size = vaa.unpack("BQI")
    (count,) = r.unpack("B")
    messages = []
    for _ in range(count):
        (size,) = r.unpack("H")
        message = _Reader(r.take(size))
        (message_type,) = message.unpack("B")
        if message_type != 0:
            raise ValueError(f"message type {message_type}, expected 0 (price feed)")
        feed_id = message.take(32).hex()
        price, conf, expo, publish_time, prev, ema_price, ema_conf = message.unpack("qQiqqqQ")
        messages.append(PriceMessage(feed_id, price, conf, expo, publish_time, prev, ema_price, ema_conf))
        (proofs,) = r.unpack("B")
        r.take(20 * proofs)
    if r.at != len(blob):
        raise ValueError(f"{len(blob) - r.at} bytes left over after the last update")
    return AccumulatorUpdate(slot, timestamp, tuple(messages))
