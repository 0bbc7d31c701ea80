"""Sorting JSON-RPC failures into "shrink the range", "retry" and "give up".

Nodes and providers word the eth_getLogs limits differently and even reuse
codes (Infura's -32005 means "too many results" but also "rate limited"), so
the message decides first and the code only as a fallback. The wordings
below are ones real nodes and providers send.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from perpstream.chain.client import (
    ChainError,
    FatalChainError,
    RangeTooLargeError,
    TransientChainError,
)

__all__ = ["classify_rpc_error", "classify_http_status"]

_RATE_LIMITED = re.compile(
    r"rate limit|too many requests|request rate exceeded|request count exceeded|"
    r"capacity exceeded|compute units",
    re.IGNORECASE,
)

_RANGE_LIMITED = re.compile(
    r"quer(y|ies) returned more than \d+ results"  # geth, Infura, zkSync, Cosmos EVM
    r"|log response size exceeded"  # Alchemy, Cloudflare
    r"|block range is too wide"  # Ankr
    r"|block range (is )?(too large|larger than)"  # Polygon, Morph
    r"|range \d+ (exceeds|is bigger than) (the )?(range )?limit"  # Infura, Tenderly
    r"|exceed(s|ed)? (the )?maximum block range"  # BSC
    r"|limited to a [\d,]+ (block )?range"  # QuickNode
    r"|block range greater than"  # geth --rpc.rangelimit
    r"|blocks? range .*(exceed|limit)"  # QuickNode, Nethermind
    r"|too many (logs|results)"
    r"|response size (is )?(too (big|large)|exceeded)"
    r"|(try|reduce)[^.]*block range",  # "Try with this block range [...]"
    re.IGNORECASE,
)

_TRANSIENT_WORDING = re.compile(
    r"header not found|unknown block|timeout|timed out|try again|temporarily|"
    r"unavailable|busy|upstream|overloaded|internal error",
    re.IGNORECASE,
)

_CODE_TOO_MANY_RESULTS = -32005
# "Server error" and "internal error": the node failed, the request may be fine.
_TRANSIENT_CODES = {-32000, -32603}


def classify_rpc_error(error: Mapping[str, Any]) -> type[ChainError]:
    """The error class for a JSON-RPC ``error`` object."""
    code = error.get("code")
    # Some providers put the telling text in ``data`` (Tenderly: data.payload).
    text = f"{error.get('message', '')} {json.dumps(error.get('data', ''))}"
    if _RATE_LIMITED.search(text):
        return TransientChainError
    if _RANGE_LIMITED.search(text) or code == _CODE_TOO_MANY_RESULTS:
        return RangeTooLargeError
    if code in _TRANSIENT_CODES or _TRANSIENT_WORDING.search(text):
        return TransientChainError
    return FatalChainError


def classify_http_status(status: int) -> type[ChainError]:
    """The error class for a non-2xx HTTP reply that carried no JSON-RPC error."""
    if status in (408, 425, 429) or status >= 500:
        return TransientChainError
    return FatalChainError
