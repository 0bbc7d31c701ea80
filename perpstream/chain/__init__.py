"""The on-chain side of perpstream.

The reference exchange contract (Vyper source + committed artifact), the
embedded dev chain (eth-tester / py-evm), a ChainClient for real nodes over
JSON-RPC, the event indexer with its durable SQLite cursor and reorg
handling, and demo activity (traders, liquidator, funding keeper).
"""

import sys

from eth import EVM_RECURSION_LIMIT

from perpstream.chain.artifact import ContractArtifact, load_artifact
from perpstream.chain.client import (
    BlockHeader,
    ChainClient,
    ChainError,
    FatalChainError,
    RangeTooLargeError,
    RawLog,
    TransientChainError,
)
from perpstream.chain.decoding import EventDecoder, LogDecodeError
from perpstream.chain.demo import DemoLiquidator, DemoTrader, FundingKeeper
from perpstream.chain.embedded import (
    DevChain,
    EmbeddedChainClient,
    MarketRisk,
    OnChainPosition,
    OpenOrder,
    TransactionReverted,
    TxReceipt,
)
from perpstream.chain.events import (
    ChainEvent,
    Cursor,
    EventMeta,
    Finality,
    FundingUpdated,
    IndexedEvent,
    PositionClosed,
    PositionEvent,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    StoredFunding,
    StoredPosition,
    StoredRecord,
)
from perpstream.chain.indexer import (
    EventSink,
    Indexer,
    IndexerStatus,
    PollOutcome,
    ReorgTooDeepError,
    RetryPolicy,
)
from perpstream.chain.jsonrpc import JsonRpcChainClient
from perpstream.chain.store import (
    DB_FILENAME,
    ChainIdentity,
    IndexerStore,
    PositionStore,
    StoreMismatchError,
    StoreSnapshot,
)

# py_ecc, which the EVM libraries above pull in, raises the interpreter's
# recursion limit to 100,000 on import. The limit also bounds C-level
# recursion such as json's scanner, and 100,000 nested brackets overflow the
# main thread's stack: a single 64 KiB WebSocket frame of "[" killed the
# daemon with SIGSEGV, and so could a Hermes event or a node's reply. py-evm
# needs 12,288 (1,024 EVM call frames); keep that and no more.
sys.setrecursionlimit(min(sys.getrecursionlimit(), EVM_RECURSION_LIMIT))

__all__ = [
    "BlockHeader",
    "ChainClient",
    "ChainError",
    "ChainEvent",
    "ChainIdentity",
    "ContractArtifact",
    "Cursor",
    "DB_FILENAME",
    "DemoLiquidator",
    "DemoTrader",
    "DevChain",
    "EmbeddedChainClient",
    "EventDecoder",
    "EventMeta",
    "EventSink",
    "FatalChainError",
    "Finality",
    "FundingKeeper",
    "FundingUpdated",
    "IndexedEvent",
    "Indexer",
    "IndexerStatus",
    "IndexerStore",
    "JsonRpcChainClient",
    "LogDecodeError",
    "MarketRisk",
    "OnChainPosition",
    "OpenOrder",
    "PollOutcome",
    "PositionClosed",
    "PositionEvent",
    "PositionLiquidated",
    "PositionModified",
    "PositionOpened",
    "PositionStore",
    "RangeTooLargeError",
    "RawLog",
    "ReorgTooDeepError",
    "RetryPolicy",
    "StoreMismatchError",
    "StoreSnapshot",
    "StoredFunding",
    "StoredPosition",
    "StoredRecord",
    "TransactionReverted",
    "TransientChainError",
    "TxReceipt",
    "load_artifact",
]
