# pragma version 0.4.3
"""
@title PerpExchange
@notice Reference isolated-margin perpetual-futures exchange for perpstream.
        Collateral is bookkept, not transferred, and prices are supplied by
        the caller: the contract exists to produce the event stream the
        indexer consumes, with the same arithmetic as the service's domain
        model (18-decimal fixed point throughout).
"""

WAD: constant(uint256) = 10**18
MAX_BATCH: constant(uint256) = 64


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
    entryPrice: uint256


owner: public(address)
isKeeper: public(HashMap[address, bool])
defaultRisk: public(MarketRisk)
marketRisk: public(HashMap[bytes32, MarketRisk])
funding: public(HashMap[bytes32, Funding])
# Every position ever opened, in order: positionIdAt[0 .. positionCount - 1].
positionCount: public(uint256)
positionIdAt: public(HashMap[uint256, bytes32])
positions: HashMap[bytes32, Position]


@deploy
def __init__(default_risk: MarketRisk):
    self.owner = msg.sender
    self.isKeeper[msg.sender] = True
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


@view
@external
def getPosition(positionId: bytes32) -> Position:
    """@notice The open position, or an all-zero record when there is none."""
    return self.positions[positionId]


@external
def openPosition(
    marketId: bytes32, isLong: bool, size: uint256, collateral: uint256, entryPrice: uint256
) -> bytes32:
    return self._open(OpenOrder(
        marketId=marketId, isLong=isLong, size=size, collateral=collateral, entryPrice=entryPrice
    ))


@external
def openPositions(orders: DynArray[OpenOrder, MAX_BATCH]) -> DynArray[bytes32, MAX_BATCH]:
    """@notice Open several positions for the caller in one transaction."""
    ids: DynArray[bytes32, MAX_BATCH] = []
    for order: OpenOrder in orders:
        ids.append(self._open(order))
    return ids


@external
def modifyPosition(positionId: bytes32, size: uint256, collateral: uint256, entryPrice: uint256):
    """
    @notice Set a position's size, collateral and entry price. Funding owed
            so far is settled into the new collateral and the position's
            funding index restarts from the market's current index.
    """
    position: Position = self._owned_position(positionId)
    assert size > 0, "size is zero"
    assert entryPrice > 0, "entry price is zero"
    settled: int256 = convert(collateral, int256) - self._funding_owed(position)
    assert settled > 0, "funding owed exceeds collateral"
    position.size = size
    position.collateral = convert(settled, uint256)
    position.entryPrice = entryPrice
    position.entryFundingIndex = self.funding[position.marketId].index
    self.positions[positionId] = position
    log PositionModified(
        positionId=positionId,
        size=position.size,
        collateral=position.collateral,
        entryPrice=position.entryPrice,
        entryFundingIndex=position.entryFundingIndex,
    )


@external
def closePosition(positionId: bytes32, exitPrice: uint256) -> int256:
    """@notice Close a position; realized pnl is price pnl minus funding owed."""
    position: Position = self._owned_position(positionId)
    assert exitPrice > 0, "exit price is zero"
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


@external
def liquidate(positionId: bytes32, price: uint256) -> uint256:
    """
    @notice Liquidate a position whose equity at `price` is below its
            maintenance margin; anyone may call. The reward is
            clamp(notional * liquidationFeeRatio, minKeeperFee, maxKeeperFee),
            never more than the remaining equity.
    """
    position: Position = self.positions[positionId]
    assert position.size > 0, "no such position"
    assert price > 0, "price is zero"
    risk: MarketRisk = self._risk(position.marketId)
    notional: uint256 = position.size * price // WAD
    equity: int256 = (
        convert(position.collateral, int256)
        + self._price_pnl(position, price)
        - self._funding_owed(position)
    )
    maintenance: uint256 = notional * risk.maintenanceMarginRatio // WAD
    assert equity < convert(maintenance, int256), "position is not liquidatable"
    reward: uint256 = min(
        max(notional * risk.liquidationFeeRatio // WAD, risk.minKeeperFee), risk.maxKeeperFee
    )
    if equity <= 0:
        reward = 0
    elif convert(reward, int256) > equity:
        reward = convert(equity, uint256)
    self.positions[positionId] = empty(Position)
    log PositionLiquidated(
        positionId=positionId,
        account=position.account,
        liquidator=msg.sender,
        marketId=position.marketId,
        price=price,
        reward=reward,
    )
    return reward


@external
def updateFunding(marketId: bytes32, ratePerHour: int256, index: int256, timestamp: uint256):
    """@notice Post a market's funding rate and index (keepers only)."""
    assert self.isKeeper[msg.sender], "only a keeper"
    assert timestamp >= self.funding[marketId].timestamp, "funding timestamp goes backwards"
    self.funding[marketId] = Funding(ratePerHour=ratePerHour, index=index, timestamp=timestamp)
    log FundingUpdated(
        marketId=marketId, fundingRatePerHour=ratePerHour, fundingIndex=index, timestamp=timestamp
    )


@internal
def _open(order: OpenOrder) -> bytes32:
    assert order.size > 0, "size is zero"
    assert order.collateral > 0, "collateral is zero"
    assert order.entryPrice > 0, "entry price is zero"
    positionId: bytes32 = keccak256(abi_encode(self, self.positionCount))
    index: int256 = self.funding[order.marketId].index
    self.positions[positionId] = Position(
        account=msg.sender,
        marketId=order.marketId,
        isLong=order.isLong,
        size=order.size,
        collateral=order.collateral,
        entryPrice=order.entryPrice,
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
        entryPrice=order.entryPrice,
        entryFundingIndex=index,
    )
    return positionId


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
