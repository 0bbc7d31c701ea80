# pragma version 0.4.3
"""
@title PerpExchange
@notice Reference isolated-margin perpetual-futures exchange for perpstream.
        Collateral is bookkept, not transferred. Prices come from an oracle
        with the interface of Pyth's EVM contract: every price-dependent
        transaction carries signed update data, pays the oracle's update fee,
        submits the data (updatePriceFeeds) and then reads the market's feed
        no older than maxPriceAge (getPriceNoOlderThan). A caller never names
        a price. Arithmetic is 18-decimal fixed point throughout, the same as
        the service's domain model.
"""

WAD: constant(uint256) = 10**18
MAX_BATCH: constant(uint256) = 64
# Bounds of the update data passed through to the oracle: Hermes's binary.data
# for a few feeds is a few KiB.
MAX_UPDATES: constant(uint256) = 8
MAX_UPDATE_BYTES: constant(uint256) = 4096


event PositionOpened:
    positionId: indexed(bytes32)
    account: indexed(address)
    marketId: indexed(bytes32)
    isLong: bool
    size: uint256
    collateral: uint256
    entryPrice: uint256
    entryFundingIndex: int256

event PositionModified:
    positionId: indexed(bytes32)
    size: uint256
    collateral: uint256
    entryPrice: uint256
    entryFundingIndex: int256

event PositionClosed:
    positionId: indexed(bytes32)
    account: indexed(address)
    marketId: indexed(bytes32)
    exitPrice: uint256
    realizedPnl: int256

event PositionLiquidated:
    positionId: indexed(bytes32)
    account: indexed(address)
    liquidator: indexed(address)
    marketId: bytes32
    price: uint256
    reward: uint256

event FundingUpdated:
    marketId: indexed(bytes32)
    fundingRatePerHour: int256
    fundingIndex: int256
    timestamp: uint256



# PythStructs.Price
struct Price:
    price: int64
    conf: uint64
    expo: int32
    publishTime: uint256

# The part of Pyth's IPyth the exchange uses.
interface IPyth:
    def getUpdateFee(updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES]) -> uint256: view
    def updatePriceFeeds(updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES]): payable
    def getPriceNoOlderThan(id: bytes32, age: uint256) -> Price: view

struct Position:
    account: address
    marketId: bytes32
    isLong: bool
    size: uint256
    collateral: uint256
    entryPrice: uint256
    entryFundingIndex: int256

struct Funding:
    ratePerHour: int256
    index: int256
    timestamp: uint256

# Risk parameters of one market, as in the service's market config.
struct MarketRisk:
    maintenanceMarginRatio: uint256
    liquidationFeeRatio: uint256
    minKeeperFee: uint256
    maxKeeperFee: uint256

struct OpenOrder:
    marketId: bytes32
    isLong: bool
    size: uint256
    collateral: uint256

# What liquidate checks, at one price: liquidatable when equity < maintenance.
struct Margin:
    equity: int256
    maintenance: uint256
    reward: uint256


owner: public(address)
isKeeper: public(HashMap[address, bool])
oracle: public(IPyth)
# The oracle feed each market is priced by, and how old its price may be.
feedIdOf: public(HashMap[bytes32, bytes32])
maxPriceAge: public(uint256)
defaultRisk: public(MarketRisk)
marketRisk: public(HashMap[bytes32, MarketRisk])
funding: public(HashMap[bytes32, Funding])
# Every position ever opened, in order: positionIdAt[0 .. positionCount - 1].
positionCount: public(uint256)
positionIdAt: public(HashMap[uint256, bytes32])
positions: HashMap[bytes32, Position]


@deploy
def __init__(oracle: IPyth, max_price_age: uint256, default_risk: MarketRisk):
    assert oracle.address != empty(address), "oracle is the zero address"
    self.owner = msg.sender
    self.isKeeper[msg.sender] = True
    self.oracle = oracle
    self.maxPriceAge = max_price_age
    self._check_risk(default_risk)
    self.defaultRisk = default_risk


@external
def setKeeper(account: address, enabled: bool):
    assert msg.sender == self.owner, "only the owner"
    self.isKeeper[account] = enabled


@external
def setMarketRisk(marketId: bytes32, risk: MarketRisk):
    assert msg.sender == self.owner, "only the owner"
    self._check_risk(risk)
    self.marketRisk[marketId] = risk


@external
def setMarketFeed(marketId: bytes32, feedId: bytes32):
    """@notice Price `marketId` by the oracle's feed `feedId`."""
    assert msg.sender == self.owner, "only the owner"
    assert feedId != empty(bytes32), "feed id is zero"
    self.feedIdOf[marketId] = feedId


@external
def setMaxPriceAge(max_price_age: uint256):
    assert msg.sender == self.owner, "only the owner"
    self.maxPriceAge = max_price_age


@view
@external
def getPosition(positionId: bytes32) -> Position:
    """@notice The open position, or an all-zero record when there is none."""
    return self.positions[positionId]


@view
@external
def marginAt(positionId: bytes32, price: uint256) -> Margin:
    """
    @notice Equity, maintenance margin and keeper reward of a position at
            `price` (a wad), exactly as `liquidate` computes them: the
            position is liquidatable at that price when equity < maintenance.
    """
    position: Position = self.positions[positionId]
    assert position.size > 0, "no such position"
    assert price > 0, "price is zero"
    return self._margin(position, price)


@payable
@external
def openPosition(
    marketId: bytes32,
    isLong: bool,
    size: uint256,
    collateral: uint256,
    updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES],
) -> bytes32:
    """@notice Open a position at the oracle's price."""
    self._update_prices(updateData)
    return self._open(OpenOrder(marketId=marketId, isLong=isLong, size=size, collateral=collateral))


@payable
@external
def openPositions(
    orders: DynArray[OpenOrder, MAX_BATCH], updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES]
) -> DynArray[bytes32, MAX_BATCH]:
    """@notice Open several positions for the caller in one transaction."""
    self._update_prices(updateData)
    ids: DynArray[bytes32, MAX_BATCH] = []
    for order: OpenOrder in orders:
        ids.append(self._open(order))
    return ids


@payable
@external
def modifyPosition(
    positionId: bytes32,
    size: uint256,
    collateral: uint256,
    updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES],
):
    """
    @notice Set a position's size and collateral at the oracle's price. Added
            size moves the entry price to the size-weighted average (rounded
            down); removed size realizes its price pnl into the collateral.
            Funding owed so far is settled into the new collateral and the
            position's funding index restarts from the market's current index.
    """
    self._update_prices(updateData)
    position: Position = self._owned_position(positionId)
    assert size > 0, "size is zero"
    price: uint256 = self._price(position.marketId)
    settled: int256 = convert(collateral, int256) - self._funding_owed(position)
    if size > position.size:
        position.entryPrice = (position.size * position.entryPrice + (size - position.size) * price) // size
    elif size < position.size:
        removed: Position = position
        removed.size = position.size - size
        settled += self._price_pnl(removed, price)
    assert settled > 0, "funding owed exceeds collateral"
    position.size = size
    position.collateral = convert(settled, uint256)
    position.entryFundingIndex = self.funding[position.marketId].index
    self.positions[positionId] = position
    log PositionModified(
        positionId=positionId,
        size=position.size,
        collateral=position.collateral,
        entryPrice=position.entryPrice,
        entryFundingIndex=position.entryFundingIndex,
    )


@payable
@external
def closePosition(positionId: bytes32, updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES]) -> int256:
    """@notice Close a position at the oracle's price; realized pnl is price pnl minus funding owed."""
    self._update_prices(updateData)
    position: Position = self._owned_position(positionId)
    exitPrice: uint256 = self._price(position.marketId)
    pnl: int256 = self._price_pnl(position, exitPrice) - self._funding_owed(position)
    self.positions[positionId] = empty(Position)
    log PositionClosed(
        positionId=positionId,
        account=position.account,
        marketId=position.marketId,
        exitPrice=exitPrice,
        realizedPnl=pnl,
    )
    return pnl


@payable
@external
def liquidate(positionId: bytes32, updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES]) -> uint256:
    """
    @notice Liquidate a position whose equity at the oracle's price is below
            its maintenance margin; anyone may call. The reward is
            clamp(notional * liquidationFeeRatio, minKeeperFee, maxKeeperFee),
            never more than the remaining equity (see marginAt).
    """
    self._update_prices(updateData)
    position: Position = self.positions[positionId]
    assert position.size > 0, "no such position"
    price: uint256 = self._price(position.marketId)
    margin: Margin = self._margin(position, price)
    assert margin.equity < convert(margin.maintenance, int256), "position is not liquidatable"
    self.positions[positionId] = empty(Position)
    log PositionLiquidated(
        positionId=positionId,
        account=position.account,
        liquidator=msg.sender,
        marketId=position.marketId,
        price=price,
        reward=margin.reward,
    )
    return margin.reward


@external
def updateFunding(marketId: bytes32, ratePerHour: int256, index: int256, timestamp: uint256):
    """@notice Post a market's funding rate and index (keepers only)."""
    assert self.isKeeper[msg.sender], "only a keeper"
    assert timestamp >= self.funding[marketId].timestamp, "funding timestamp goes backwards"
    self.funding[marketId] = Funding(ratePerHour=ratePerHour, index=index, timestamp=timestamp)
    log FundingUpdated(
        marketId=marketId, fundingRatePerHour=ratePerHour, fundingIndex=index, timestamp=timestamp
    )


@payable
@internal
def _update_prices(updateData: DynArray[Bytes[MAX_UPDATE_BYTES], MAX_UPDATES]):
    """Pay the oracle's fee (exactly what the caller sent) and submit the updates."""
    fee: uint256 = staticcall self.oracle.getUpdateFee(updateData)
    assert msg.value == fee, "value sent is not the oracle's update fee"
    extcall self.oracle.updatePriceFeeds(updateData, value=fee)


@view
@internal
def _price(marketId: bytes32) -> uint256:
    """The market's oracle price as a wad, no older than maxPriceAge."""
    feedId: bytes32 = self.feedIdOf[marketId]
    assert feedId != empty(bytes32), "market has no price feed"
    price: Price = staticcall self.oracle.getPriceNoOlderThan(feedId, self.maxPriceAge)
    return self._to_wad(price)


@pure
@internal
def _to_wad(price: Price) -> uint256:
    """price * 10^expo as a wad: exact for expo >= -18, finer exponents round down."""
    assert price.price > 0, "oracle price is not positive"
    mantissa: uint256 = convert(price.price, uint256)
    decimals: int256 = 18 + convert(price.expo, int256)
    if decimals >= 0:
        return mantissa * 10 ** convert(decimals, uint256)
    return mantissa // 10 ** convert(-decimals, uint256)


@internal
def _open(order: OpenOrder) -> bytes32:
    assert order.size > 0, "size is zero"
    assert order.collateral > 0, "collateral is zero"
    entryPrice: uint256 = self._price(order.marketId)
    positionId: bytes32 = keccak256(abi_encode(self, self.positionCount))
    index: int256 = self.funding[order.marketId].index
    self.positions[positionId] = Position(
        account=msg.sender,
        marketId=order.marketId,
        isLong=order.isLong,
        size=order.size,
        collateral=order.collateral,
        entryPrice=entryPrice,
        entryFundingIndex=index,
    )
    self.positionIdAt[self.positionCount] = positionId
    self.positionCount += 1
    log PositionOpened(
        positionId=positionId,
        account=msg.sender,
        marketId=order.marketId,
        isLong=order.isLong,
        size=order.size,
        collateral=order.collateral,
        entryPrice=entryPrice,
        entryFundingIndex=index,
    )
    return positionId


@view
@internal
def _margin(position: Position, price: uint256) -> Margin:
    """The one definition of a position's margin, shared by liquidate and marginAt."""
    risk: MarketRisk = self._risk(position.marketId)
    notional: uint256 = position.size * price // WAD
    equity: int256 = (
        convert(position.collateral, int256)
        + self._price_pnl(position, price)
        - self._funding_owed(position)
    )
    maintenance: uint256 = notional * risk.maintenanceMarginRatio // WAD
    reward: uint256 = min(
        max(notional * risk.liquidationFeeRatio // WAD, risk.minKeeperFee), risk.maxKeeperFee
    )
    if equity <= 0:
        reward = 0
    elif convert(reward, int256) > equity:
        reward = convert(equity, uint256)
    return Margin(equity=equity, maintenance=maintenance, reward=reward)


@view
@internal
def _owned_position(positionId: bytes32) -> Position:
    position: Position = self.positions[positionId]
    assert position.size > 0, "no such position"
    assert position.account == msg.sender, "not the position's account"
    return position


@view
@internal
def _risk(marketId: bytes32) -> MarketRisk:
    risk: MarketRisk = self.marketRisk[marketId]
    if risk.maintenanceMarginRatio == 0:
        return self.defaultRisk
    return risk


@pure
@internal
def _check_risk(risk: MarketRisk):
    assert risk.maintenanceMarginRatio > 0 and risk.maintenanceMarginRatio < WAD, "bad margin ratio"
    assert risk.liquidationFeeRatio < WAD, "bad liquidation fee ratio"
    assert risk.minKeeperFee <= risk.maxKeeperFee, "min keeper fee exceeds max"


@pure
@internal
def _price_pnl(position: Position, price: uint256) -> int256:
    """s * size * (price - entryPrice), 18 decimals."""
    pnl: int256 = convert(position.size, int256) * (convert(price, int256) - convert(position.entryPrice, int256)) // convert(WAD, int256)
    if position.isLong:
        return pnl
    return -pnl


@view
@internal
def _funding_owed(position: Position) -> int256:
    """s * size * (index_now - entryFundingIndex), 18 decimals; positive: the position pays."""
    owed: int256 = convert(position.size, int256) * (self.funding[position.marketId].index - position.entryFundingIndex) // convert(WAD, int256)
    if position.isLong:
        return owed
    return -owed
