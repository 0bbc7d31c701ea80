"""Price sources: Pyth Hermes (server-sent events over httpx) and a simulated feed.

Every source is a ``PriceFeed`` that emits ``perpstream.domain.prices.PriceUpdate``;
``StalenessTracker`` judges how old the newest price of each feed is.
"""

from perpstream.feeds.feed import FeedStatus, FeedStatusRecorder, OnUpdate, PriceFeed
from perpstream.feeds.gbm import REFERENCE_MARKETS, SIMULATED_SOURCE, GbmPriceGenerator, MarketSpec
from perpstream.feeds.hermes import DEFAULT_HERMES_URL, HermesConfig, HermesFeed
from perpstream.feeds.hermes_payload import HERMES_SOURCE, HermesBatch, HermesPayloadError, decode_hermes_payload
from perpstream.feeds.budget import RequestBudget
from perpstream.feeds.ordering import OracleOrderFilter
from perpstream.feeds.scripted import ScriptedPriceGenerator
from perpstream.feeds.simulated import DEFAULT_INTERVAL, PriceGenerator, SimulatedFeed
from perpstream.feeds.sse import SSEEvent, SSEParser, SSEProtocolError
from perpstream.feeds.staleness import (
    DEFAULT_STALE_AFTER_MS,
    Freshness,
    StalenessTracker,
    age_ms,
    assess_freshness,
)

__all__ = [
    "DEFAULT_HERMES_URL",
    "DEFAULT_INTERVAL",
    "DEFAULT_STALE_AFTER_MS",
    "HERMES_SOURCE",
    "REFERENCE_MARKETS",
    "SIMULATED_SOURCE",
    "FeedStatus",
    "FeedStatusRecorder",
    "Freshness",
    "GbmPriceGenerator",
    "HermesBatch",
    "HermesConfig",
    "HermesFeed",
    "HermesPayloadError",
    "MarketSpec",
    "OnUpdate",
    "PriceFeed",
    "PriceGenerator",
    "OracleOrderFilter",
    "RequestBudget",
    "SSEEvent",
    "SSEParser",
    "SSEProtocolError",
    "ScriptedPriceGenerator",
    "SimulatedFeed",
    "StalenessTracker",
    "age_ms",
    "assess_freshness",
    "decode_hermes_payload",
]
