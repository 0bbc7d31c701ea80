"""The pure, synchronous, exact math of perpstream: no I/O, no trio.

Prices, positions, risk, funding, open interest and the liquidation index,
all in exact decimals or rationals (floats never touch money).
"""

from perpstream.domain.book import PositionBook
from perpstream.domain.decimals import (
    DECIMAL_CONTEXT,
    EXACT_CONTEXT,
    WAD_DECIMALS,
    decimal_context,
    exact_context,
    from_wad,
    to_wad,
    to_wire,
)
from perpstream.domain.funding import FundingSource, FundingState, model_funding_rate
from perpstream.domain.liquidation_index import IndexQuery, LiquidationIndex, PositionsView, StaleQueryError
from perpstream.domain.markets import MarketParams
from perpstream.domain.open_interest import OpenInterest
from perpstream.domain.positions import Position, Side
from perpstream.domain.prices import PriceUpdate, PythPrice, normalize_feed_id
from perpstream.domain.risk import (
    ALERT_LEVELS,
    PositionRisk,
    RiskLevel,
    classify_health,
    position_level,
    position_risk,
    risk_price,
)

__all__ = [
    "ALERT_LEVELS",
    "DECIMAL_CONTEXT",
    "EXACT_CONTEXT",
    "WAD_DECIMALS",
    "FundingSource",
    "FundingState",
    "IndexQuery",
    "LiquidationIndex",
    "MarketParams",
    "OpenInterest",
    "Position",
    "PositionBook",
    "PositionRisk",
    "PositionsView",
    "PriceUpdate",
    "PythPrice",
    "RiskLevel",
    "Side",
    "StaleQueryError",
    "classify_health",
    "decimal_context",
    "exact_context",
    "from_wad",
    "model_funding_rate",
    "normalize_feed_id",
    "position_level",
    "position_risk",
    "risk_price",
    "to_wad",
    "to_wire",
]
