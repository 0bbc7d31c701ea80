"""Sorting JSON-RPC failures into "shrink the range", "retry" and "give up".

Nodes and providers word the eth_getLogs limits differently and even reuse
codes (Infura's -32005 means "too many results" but also "rate limited";
reth and 1rpc send range limits as -32602 "invalid params", Alchemy as
-32600 "invalid request", Scroll's geth as -32000 "server error"), so the
message decides first and the code only as a fallback. The wordings below
are ones real nodes and providers send.

Many refusals also say what would work: a span limit ("max block range
5000", "up to a 500 block range", "limited to 0 - 50 blocks range",
"ranges over 10000 blocks") or a range to retry with ("retry with the range
a-b", "this block range should work: [0x.., 0x..]"). :func:`range_hint`
reads both so the indexer can ask for exactly that instead of guessing.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping


from perpstream.chain.client import (
    ChainError,
    FatalChainError,
    RangeHint,
    RangeTooLargeError,
    TransientChainError,
)

__all__ = ["classify_rpc_error", "classify_http_status", "range_hint", "rpc_error"]

_RATE_LIMITED = re.compile(
    r"rate limit|too many requests|request rate exceeded|request count exceeded|"
    r"capacity exceeded|compute units",
    re.IGNORECASE,
)

_RANGE_LIMITED = re.compile(
    r"quer(y|ies) returned more than \d+ results"  # geth, Infura, zkSync, Cosmos EVM
    r"|query exceeds max (block range|results)"  # reth (logs_utils.rs), dRPC, BlastAPI
    r"|log response size exceeded"  # Alchemy, Cloudflare
    r"|block range is too wide"  # Ankr
    r"|block range (is )?(too large|larger than|bigger than)"  # Polygon, Morph, Scroll's geth
    r"|up to a [\d,]+ block range"  # Alchemy
    r"|limited to \d+ ?- ?\d+ blocks? range"  # 1rpc
    r"|ranges over [\d,]+ blocks"  # dRPC free tier
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

# A span the provider serves at most, in blocks.
_SPAN_LIMITS = (
    re.compile(r"max(?:imum)? block range:? ([\d,]+)", re.IGNORECASE),  # reth
    re.compile(r"up to a ([\d,]+) block range", re.IGNORECASE),  # Alchemy
    re.compile(r"ranges over ([\d,]+) blocks", re.IGNORECASE),  # dRPC
    re.compile(r"limited to a ([\d,]+) (?:block )?range", re.IGNORECASE),  # QuickNode
    re.compile(r"block range greater than ([\d,]+)", re.IGNORECASE),  # geth --rpc.rangelimit
)
_SPAN_BOUNDS = re.compile(r"limited to (\d+) ?- ?(\d+) blocks? range", re.IGNORECASE)  # 1rpc
# A refusal of the span itself, said without a number (Scroll's geth, Ankr, Polygon).
_SPAN_WORDING = re.compile(
    r"block range (is )?(too wide|too large|larger than|bigger than|greater than)|max(imum)? ?block ?range",
    re.IGNORECASE,
)
# A range the provider says it would serve: decimal "a-b" or hex "[0x.., 0x..]".
_SUGGESTED_DECIMAL = re.compile(r"retry with the range (\d+) ?- ?(\d+)", re.IGNORECASE)  # reth, dRPC
_SUGGESTED_HEX = re.compile(r"\[\s*(0x[0-9a-f]+)\s*,\s*(0x[0-9a-f]+)\s*\]", re.IGNORECASE)  # Alchemy

_TRANSIENT_WORDING = re.compile(
    r"header not found|unknown block|timeout|timed out|try again|temporarily|"
    r"unavailable|busy|upstream|overloaded|internal error",
    re.IGNORECASE,
)

_CODE_TOO_MANY_RESULTS = -32005
# "Server error" and "internal error": the node failed, the request may be fine.
_TRANSIENT_CODES = {-32000, -32603}


def _text(error: Mapping[str, Any]) -> str:
    # Some providers put the telling text in ``data`` (Tenderly: data.payload).
    return f"{error.get('message', '')} {json.dumps(error.get('data', ''))}"


def classify_rpc_error(error: Mapping[str, Any]) -> type[ChainError]:
    """The error class for a JSON-RPC ``error`` object."""
    code = error.get("code")
    text = _text(error)
    if _RATE_LIMITED.search(text):
        return TransientChainError
    if _RANGE_LIMITED.search(text) or code == _CODE_TOO_MANY_RESULTS:
        return RangeTooLargeError
    if code in _TRANSIENT_CODES or _TRANSIENT_WORDING.search(text):
        return TransientChainError
    return FatalChainError


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def range_hint(error: Mapping[str, Any]) -> RangeHint:
    """What a range refusal says would work (either part may be unknown)."""
    text = _text(error)
    span_limit: int | None = None
    if (bounds := _SPAN_BOUNDS.search(text)) is not None:
        span_limit = max(1, int(bounds.group(2)) - int(bounds.group(1)))
    else:
        for pattern in _SPAN_LIMITS:
            if (found := pattern.search(text)) is not None:
                span_limit = max(1, _number(found.group(1)))
                break
    suggested: tuple[int, int] | None = None
    if (decimal := _SUGGESTED_DECIMAL.search(text)) is not None:
        suggested = (int(decimal.group(1)), int(decimal.group(2)))
    elif (hexadecimal := _SUGGESTED_HEX.search(text)) is not None:
        suggested = (int(hexadecimal.group(1), 16), int(hexadecimal.group(2), 16))
    if suggested is not None and suggested[1] < suggested[0]:
        suggested = None
    span_limited = span_limit is not None or _SPAN_WORDING.search(text) is not None
    return RangeHint(span_limit=span_limit, suggested=suggested, span_limited=span_limited)


def rpc_error(method: str, error: Mapping[str, Any]) -> ChainError:
    """The exception to raise for a JSON-RPC ``error`` object answering ``method``."""
    kind = classify_rpc_error(error)
    message = f"{method}: RPC error {error.get('code')}: {error.get('message')}"
    if kind is RangeTooLargeError:
        return RangeTooLargeError(message, hint=range_hint(error))
    return kind(message)


def classify_http_status(status: int) -> type[ChainError]:
    """The error class for a non-2xx HTTP reply that carried no JSON-RPC error."""
    if status in (408, 425, 429) or status >= 500:
        return TransientChainError
    return FatalChainError


