"""The embedded dev chain, its demo oracle and bots, and the contract build tooling.

Everything here runs on py-evm / eth-tester or signs for the demo oracle;
production (a real node, Pyth's own oracle) needs none of it, which is why it
lives apart from :mod:`perpstream.chain`. The exchange is deployed by
:func:`deploy_exchange` with any Web3; :class:`DevChain` runs it in-process.
"""

import sys

from eth import EVM_RECURSION_LIMIT

from perpstream.devchain.demo import DemoLiquidator, DemoTrader, FundingKeeper, Quote, QuoteSource
from perpstream.devchain.deploy import Deployment, DeploymentError, MarketRisk, deploy_exchange
from perpstream.devchain.embedded import (
    DEFAULT_MARKET_FEEDS,
    DevChain,
    EmbeddedChainClient,
    OnChainPosition,
    OpenOrder,
    TransactionReverted,
    TxReceipt,
)
from perpstream.devchain.oracle_update import DemoPublisher, OracleDomain
from perpstream.devchain.signing_feed import SignedPrices, SigningFeed

# py_ecc, which web3 / eth-account pull in above, raises the interpreter's
# recursion limit to 100,000 on import. The limit also bounds C-level
# recursion such as json's scanner, and 100,000 nested brackets overflow the
# main thread's stack: a single 64 KiB WebSocket frame of "[" killed the
# daemon with SIGSEGV, and so could a Hermes event or a node's reply. py-evm
# needs 12,288 (1,024 EVM call frames); keep that and no more. It runs after
# the imports above, so it is in force wherever this package is imported.
sys.setrecursionlimit(min(sys.getrecursionlimit(), EVM_RECURSION_LIMIT))

__all__ = [
    "DEFAULT_MARKET_FEEDS",
    "DemoLiquidator",
    "DemoPublisher",
    "DemoTrader",
    "Deployment",
    "DeploymentError",
    "DevChain",
    "EmbeddedChainClient",
    "FundingKeeper",
    "MarketRisk",
    "OnChainPosition",
    "OpenOrder",
    "OracleDomain",
    "Quote",
    "QuoteSource",
    "SignedPrices",
    "SigningFeed",
    "TransactionReverted",
    "TxReceipt",
    "deploy_exchange",
]
