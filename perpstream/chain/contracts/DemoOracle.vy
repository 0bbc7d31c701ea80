# pragma version 0.4.3
"""
@title DemoOracle
@notice A price oracle with the interface of Pyth's EVM contract (IPyth), for
        the embedded dev chain. Instead of Wormhole-attested Hermes updates it
        accepts updates signed by one demo publisher key.

        Update encoding (129 bytes, big-endian):
          0   4  magic "PSD1"
          4  32  feed id
         36   8  price (int64, two's complement)
         44   8  conf (uint64)
         52   4  expo (int32, two's complement)
         56   8  publish time (uint64, Unix seconds)
         64   1  v (27 or 28)
         65  32  r
         97  32  s (lower half of the curve order)

        The signature is over the EIP-712 digest of
        PriceUpdate(bytes32 id,int64 price,uint64 conf,int32 expo,uint64 publishTime)
        in the domain {name: "PerpstreamDemoOracle", version: "1", chainId,
        verifyingContract: this oracle}, so an update signed for one chain or
        one deployment is refused by every other. Reverts carry Pyth's own
        error selectors (PythErrors.sol), so a client decodes them alike.
"""

MAX_UPDATES: constant(uint256) = 8
MAX_UPDATE_BYTES: constant(uint256) = 4096
UPDATE_LENGTH: constant(uint256) = 129
MAGIC: constant(bytes4) = 0x50534431  # "PSD1"
# secp256k1's order / 2: a larger s is the malleable twin of a valid signature.
HALF_ORDER: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
NAME_HASH: constant(bytes32) = keccak256("PerpstreamDemoOracle")
VERSION_HASH: constant(bytes32) = keccak256("1")
UPDATE_TYPEHASH: constant(bytes32) = keccak256(
    "PriceUpdate(bytes32 id,int64 price,uint64 conf,int32 expo,uint64 publishTime)"
)

# PythErrors.sol
INSUFFICIENT_FEE: constant(Bytes[4]) = method_id("InsufficientFee()", output_type=Bytes[4])
INVALID_UPDATE_DATA: constant(Bytes[4]) = method_id("InvalidUpdateData()", output_type=Bytes[4])
INVALID_UPDATE_DATA_SOURCE: constant(Bytes[4]) = method_id("InvalidUpdateDataSource()", output_type=Bytes[4])
PRICE_FEED_NOT_FOUND: constant(Bytes[4]) = method_id("PriceFeedNotFound()", output_type=Bytes[4])
STALE_PRICE: constant(Bytes[4]) = method_id("StalePrice()", output_type=Bytes[4])


# PythStructs.Price
struct Price:
    price: int64
    conf: uint64
    expo: int32
    publishTime: uint256


# IPythEvents.PriceFeedUpdate
event PriceFeedUpdate:
    id: indexed(bytes32)
    publishTime: uint64
    price: int64
    conf: uint64


owner: public(address)
publisher: public(address)
singleUpdateFeeInWei: public(uint256)
latest: HashMap[bytes32, Price]


@deploy
def __init__(publisher: address, single_update_fee_in_wei: uint256):
    assert publisher != empty(address), "publisher is the zero address"
    self.owner = msg.sender
    self.publisher = publisher
    self.singleUpdateFeeInWei = single_update_fee_in_wei


@external
def setPublisher(publisher: address):
    assert msg.sender == self.owner, "only the owner"
    assert publisher != empty(address), "publisher is the zero address"
    self.publisher = publisher


@view
@external
def domainSeparator() -> bytes32:
    return self._domain_separator()


@view
@external
def getUpdateFee(updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES]) -> uint256:
    return self.singleUpdateFeeInWei * len(updateData)


@payable
@external
def updatePriceFeeds(updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES]):
    """
    @notice Verify and store each update; one no newer than the stored price
            of its feed is skipped, not refused (as Pyth does).
    """
    if msg.value < self.singleUpdateFeeInWei * len(updateData):
        raw_revert(INSUFFICIENT_FEE)
    separator: bytes32 = self._domain_separator()
    for data: Bytes[MAX_UPDATE_BYTES] in updateData:
        self._apply(data, separator)


@view
@external
def getPriceUnsafe(id: bytes32) -> Price:
    return self._price(id)


@view
@external
def getPriceNoOlderThan(id: bytes32, age: uint256) -> Price:
    price: Price = self._price(id)
    if self._abs_diff(block.timestamp, price.publishTime) > age:
        raw_revert(STALE_PRICE)
    return price


@view
@internal
def _price(id: bytes32) -> Price:
    price: Price = self.latest[id]
    if price.publishTime == 0:
        raw_revert(PRICE_FEED_NOT_FOUND)
    return price


@internal
def _apply(data: Bytes[MAX_UPDATE_BYTES], separator: bytes32):
    if len(data) != UPDATE_LENGTH or convert(slice(data, 0, 4), bytes4) != MAGIC:
        raw_revert(INVALID_UPDATE_DATA)
    id: bytes32 = extract32(data, 4)
    price: int64 = convert(self._signed(self._word(data, 36, 8), 64), int64)
    conf: uint64 = convert(self._word(data, 44, 8), uint64)
    expo: int32 = convert(self._signed(self._word(data, 52, 4), 32), int32)
    publish_time: uint64 = convert(self._word(data, 56, 8), uint64)
    v: uint256 = self._word(data, 64, 1)
    r: bytes32 = extract32(data, 65)
    s: bytes32 = extract32(data, 97)
    if v != 27 and v != 28:
        raw_revert(INVALID_UPDATE_DATA)
    if convert(s, uint256) > HALF_ORDER:
        raw_revert(INVALID_UPDATE_DATA)
    digest: bytes32 = keccak256(concat(
        b"\x19\x01",
        separator,
        keccak256(abi_encode(UPDATE_TYPEHASH, id, price, conf, expo, publish_time)),
    ))
    if ecrecover(digest, v, r, s) != self.publisher:
        raw_revert(INVALID_UPDATE_DATA_SOURCE)
    if convert(publish_time, uint256) <= self.latest[id].publishTime:
        return
    self.latest[id] = Price(price=price, conf=conf, expo=expo, publishTime=convert(publish_time, uint256))
    log PriceFeedUpdate(id=id, publishTime=publish_time, price=price, conf=conf)


@view
@internal
def _domain_separator() -> bytes32:
    return keccak256(abi_encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, chain.id, self))


@pure
@internal
def _word(data: Bytes[MAX_UPDATE_BYTES], start: uint256, length: uint256) -> uint256:
    """The big-endian unsigned integer in data[start : start + length] (length <= 32)."""
    return convert(extract32(data, start), uint256) >> (256 - 8 * length)


@pure
@internal
def _signed(unsigned: uint256, bits: uint256) -> int256:
    """A two's complement integer of `bits` bits."""
    if unsigned >= 1 << (bits - 1):
        return convert(unsigned, int256) - convert(1 << bits, int256)
    return convert(unsigned, int256)


@pure
@internal
def _abs_diff(a: uint256, b: uint256) -> uint256:
    if a > b:
        return a - b
    return b - a
