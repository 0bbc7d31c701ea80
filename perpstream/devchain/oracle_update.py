"""The demo oracle's signed price updates: encoding, EIP-712 digest, signing.

Pure functions mirroring ``DemoOracle.vy`` byte for byte. An update is 129
bytes: magic ``PSD1``, feed id, price (int64), conf (uint64), expo (int32),
publish time (uint64), then the publisher's signature ``v || r || s``. The
signature is over the EIP-712 digest of the price in the domain of one
oracle on one chain (chain id and oracle address), so an update cannot be
replayed on another deployment. No EVM is needed to sign: the feed wrapper
signs every tick.
"""

from __future__ import annotations

from decimal import Decimal

import attrs
import eth_abi
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

from perpstream.domain.prices import PythPrice, normalize_feed_id

__all__ = [
    "DEMO_PUBLISHER_KEY",
    "OracleDomain",
    "SignedUpdate",
    "UPDATE_LENGTH",
    "DemoPublisher",
    "decode_update",
    "pyth_price_from_decimal",
    "update_digest",
]

MAGIC = b"PSD1"
UPDATE_LENGTH = 129
#: The embedded chain's publisher key. It is public on purpose: the demo
#: oracle proves the update path, not secrecy. Never use it on a real chain.
DEMO_PUBLISHER_KEY = keccak(b"perpstream demo oracle publisher")

_DOMAIN_TYPEHASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
_NAME_HASH = keccak(b"PerpstreamDemoOracle")
_VERSION_HASH = keccak(b"1")
_UPDATE_TYPEHASH = keccak(b"PriceUpdate(bytes32 id,int64 price,uint64 conf,int32 expo,uint64 publishTime)")


@attrs.frozen
class OracleDomain:
    """Which oracle an update is for: the chain and the oracle's address."""

    chain_id: int
    oracle_address: str

    def separator(self) -> bytes:
        """The EIP-712 domain separator (the oracle's ``domainSeparator()``)."""
        return keccak(eth_abi.encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, self.chain_id, self.oracle_address],
        ))


@attrs.frozen
class SignedUpdate:
    """An update as the oracle reads it."""

    feed_id: str  # canonical, see normalize_feed_id
    price: PythPrice
    v: int
    r: int
    s: int


def update_digest(domain: OracleDomain, feed_id: str, price: PythPrice) -> bytes:
    """The 32-byte EIP-712 digest the publisher signs."""
    return keccak(b"\x19\x01" + domain.separator() + _struct_hash(feed_id, price))


def _struct_hash(feed_id: str, price: PythPrice) -> bytes:
    return keccak(eth_abi.encode(
        ["bytes32", "bytes32", "int64", "uint64", "int32", "uint64"],
        [_UPDATE_TYPEHASH, bytes.fromhex(normalize_feed_id(feed_id)), price.price, price.conf, price.expo,
         price.publish_time],
    ))


def _encode(feed_id: str, price: PythPrice, v: int, r: int, s: int) -> bytes:
    return b"".join((
        MAGIC,
        bytes.fromhex(normalize_feed_id(feed_id)),
        price.price.to_bytes(8, "big", signed=True),
        price.conf.to_bytes(8, "big"),
        price.expo.to_bytes(4, "big", signed=True),
        price.publish_time.to_bytes(8, "big"),
        bytes([v]),
        r.to_bytes(32, "big"),
        s.to_bytes(32, "big"),
    ))


def decode_update(data: bytes) -> SignedUpdate:
    """Parse an update (ValueError when it is not one)."""
    if len(data) != UPDATE_LENGTH or data[:4] != MAGIC:
        raise ValueError(f"not a demo oracle update ({len(data)} bytes)")
    return SignedUpdate(
        feed_id=data[4:36].hex(),
        price=PythPrice(
            price=int.from_bytes(data[36:44], "big", signed=True),
            conf=int.from_bytes(data[44:52], "big"),
            expo=int.from_bytes(data[52:56], "big", signed=True),
            publish_time=int.from_bytes(data[56:64], "big"),
        ),
        v=data[64],
        r=int.from_bytes(data[65:97], "big"),
        s=int.from_bytes(data[97:129], "big"),
    )


class DemoPublisher:
    """Signs prices for a demo oracle with one key (the demo key unless given)."""

    def __init__(self, private_key: bytes = DEMO_PUBLISHER_KEY) -> None:
        self._key = keys.PrivateKey(private_key)

    @property
    def address(self) -> str:
        """The address the oracle must be deployed with as its publisher."""
        return to_checksum_address(self._key.public_key.to_canonical_address())

    def sign(self, domain: OracleDomain, feed_id: str, price: PythPrice) -> bytes:
        """The encoded, signed update of ``price`` for ``domain``'s oracle."""
        signature = self._key.sign_msg_hash(update_digest(domain, feed_id, price))
        # eth_keys signs with a low s (EIP-2) and a 0/1 recovery id.
        return _encode(feed_id, price, signature.v + 27, signature.r, signature.s)


def pyth_price_from_decimal(value: Decimal, publish_time: int, *, expo: int = -8, conf: int = 0) -> PythPrice:
    """``value`` as Pyth's ``(price, expo)``, exactly (ValueError when it is not representable).

    ``expo`` is the coarsest exponent used; a value with more decimals gets a
    finer one, down to -18.
    """
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    expo = min(expo, exponent)
    if expo < -18:
        raise ValueError(f"{value} has more than 18 decimals")
    mantissa = value.scaleb(-expo)
    if mantissa != mantissa.to_integral_value() or not 0 < mantissa < 2**63:
        raise ValueError(f"{value} is not a positive int64 price at expo {expo}")
    return PythPrice(price=int(mantissa), conf=conf, expo=expo, publish_time=publish_time)

