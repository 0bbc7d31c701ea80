"""The on-chain side of perpstream, as production runs it.

The reference contracts' committed artifacts (ABI + bytecode, no compiler
needed), a ChainClient for real nodes over JSON-RPC, and the event indexer
with its durable SQLite cursor and reorg handling. Importing it loads no EVM:
the embedded dev chain, demo bots and contract build tooling live in
:mod:`perpstream.devchain`.
"""

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

__all__ = [
    "BlockHeader",
    "ChainClient",
    "ChainError",
    "ChainEvent",
    "ChainIdentity",
    "ContractArtifact",
    "Cursor",
    "DB_FILENAME",
    "EventDecoder",
    "EventMeta",
    "EventSink",
    "FatalChainError",
    "Finality",
    "FundingUpdated",
    "IndexedEvent",
    "Indexer",
    "IndexerStatus",
    "IndexerStore",
    "JsonRpcChainClient",
    "LogDecodeError",
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
    "TransientChainError",
    "load_artifact",
]
