"""JsonRpcChainClient: wire format and error classification (real node payloads)."""

from __future__ import annotations

import json
from typing import Any, Callable

import httpx
import pytest

from perpstream.chain import (
    FatalChainError,
    JsonRpcChainClient,
    RangeTooLargeError,
    TransientChainError,
)
from perpstream.chain.client import RangeHint
from perpstream.chain.indexer import BlockRange
from perpstream.chain.rpc_errors import classify_rpc_error, range_hint, rpc_error

URL = "http://node.test/"

# Error objects as real nodes and providers send them for an over-wide eth_getLogs.
RANGE_ERRORS = [
    {"code": -32005, "message": "query returned more than 10000 results"},  # Infura
    {"code": -32005, "message": "query returned more than 10000 results",
     "data": {"from": "0x1", "limit": 10000, "to": "0x2710"}},
    {"code": -32602, "message": "range 1000000 exceeds limit of 10000"},  # Infura, range limit
    {"code": -32602, "message": "Log response size exceeded. You can make eth_getLogs requests with "
     "up to a 2K block range and no limit on the response size, or you can request any block range "
     "with a cap of 10K logs in the response. Based on your parameters, this block range should "
     "work: [0x0, 0x7d0]"},  # Alchemy
    {"code": -32602, "message": "Query returned more than 10000 results. Try with this block range "
     "[0x118dc91, 0x1198cc3]."},  # zkSync Era
    {"code": -32602, "message": "invalid params",
     "data": {"payload": "range 9009594 is bigger than range limit 2000"}},  # Tenderly
    {"code": -32000, "message": "block range is too wide"},  # Ankr
    {"code": -32000, "message": "block range is larger than max block range, block range = 5120, "
     "max block range = 5000"},  # Morph
    {"code": -32000, "message": "exceed maximum block range: 5000"},  # BSC
    {"code": -32614, "message": "eth_getLogs is limited to a 10,000 range"},  # QuickNode
    {"code": -32000, "message": "query returned more than 10000 results"},  # Cosmos EVM
]

TRANSIENT_ERRORS = [
    {"code": -32005, "message": "project ID request rate exceeded"},  # Infura rate limit, same code
    {"code": 429, "message": "Your app has exceeded its compute units per second capacity."},
    {"code": -32000, "message": "header not found"},
    {"code": -32603, "message": "Internal error"},
]

FATAL_ERRORS = [
    {"code": -32601, "message": "the method eth_getLogs does not exist/is not available"},
    {"code": -32602, "message": "invalid argument 0: hex string without 0x prefix"},
    {"code": -32600, "message": "invalid request"},
]


@pytest.mark.parametrize("error", RANGE_ERRORS, ids=lambda e: e["message"][:40])
def test_range_limit_wordings(error: dict[str, Any]) -> None:
    assert classify_rpc_error(error) is RangeTooLargeError


@pytest.mark.parametrize("error", TRANSIENT_ERRORS, ids=lambda e: e["message"][:40])
def test_transient_wordings(error: dict[str, Any]) -> None:
    assert classify_rpc_error(error) is TransientChainError


@pytest.mark.parametrize("error", FATAL_ERRORS, ids=lambda e: e["message"][:40])
def test_fatal_wordings(error: dict[str, Any]) -> None:
    assert classify_rpc_error(error) is FatalChainError


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> JsonRpcChainClient:
    return JsonRpcChainClient(URL, http=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def replying(status: int, body: Any, *, raw: bool = False) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if raw:
            return httpx.Response(status, text=body)
        request_id = json.loads(request.content)["id"]
        return httpx.Response(status, json={"jsonrpc": "2.0", "id": request_id, **body})

    return handler


async def test_parses_blocks_and_logs_from_the_wire() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        result: Any = {
            "eth_chainId": "0x1",
            "eth_blockNumber": "0x10",
            "eth_getBlockByNumber": {
                "number": "0xf", "hash": "0x" + "AA" * 32, "parentHash": "0x" + "bb" * 32,
                "timestamp": "0x6650f000", "transactions": [],
            },
            "eth_getLogs": [{
                "address": "0x318b469bba396aec2c60342f9441be36a1945174",
                "topics": ["0x" + "01" * 32, "0x" + "02" * 32],
                "data": "0x" + "00" * 31 + "05",
                "blockNumber": "0xf", "blockHash": "0x" + "aa" * 32,
                "transactionHash": "0x" + "cc" * 32, "transactionIndex": "0x0",
                "logIndex": "0x3", "removed": False,
            }],
        }[body["method"]]
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    async with client_for(handler) as client:
        assert await client.chain_id() == 1
        assert await client.block_number() == 16
        header = await client.get_block_header(15)
        assert header is not None
        assert (header.number, header.hash, header.timestamp) == (15, "0x" + "aa" * 32, 0x6650F000)
        (log,) = await client.get_logs(1, 15, "0x318b469BBa396AEc2C60342F9441be36A1945174", [b"\x01" * 32])
    assert log.address == "0x318b469BBa396AEc2C60342F9441be36A1945174"
    assert log.topics == (b"\x01" * 32, b"\x02" * 32)
    assert (log.data[-1], log.block_number, log.log_index) == (5, 15, 3)
    assert seen[2]["params"] == ["0xf", False]
    assert seen[3]["params"] == [{
        "fromBlock": "0x1", "toBlock": "0xf",
        "address": "0x318b469BBa396AEc2C60342F9441be36A1945174", "topics": ["0x" + "01" * 32],
    }]


async def test_missing_block_is_none() -> None:
    async with client_for(replying(200, {"result": None})) as client:
        assert await client.get_block_header(99) is None


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (replying(200, {"error": RANGE_ERRORS[0]}), RangeTooLargeError),
        (replying(400, {"error": RANGE_ERRORS[3]}), RangeTooLargeError),  # Alchemy answers 400
        (replying(429, {"error": {"code": -32005,
                                  "message": "daily request count exceeded, request rate limited"}}),
         TransientChainError),
        (replying(503, "<html>Service Unavailable</html>", raw=True), TransientChainError),
        (replying(502, "", raw=True), TransientChainError),
        (replying(429, "Too Many Requests", raw=True), TransientChainError),
        (replying(200, "<html>maintenance</html>", raw=True), TransientChainError),
        (replying(401, "invalid project id", raw=True), FatalChainError),
        (replying(403, {"error": {"code": -32002, "message": "rejected due to project ID settings"}}),
         FatalChainError),
        (replying(200, {"error": FATAL_ERRORS[0]}), FatalChainError),
    ],
    ids=["infura-range", "alchemy-400", "rate-limit-429", "503-html", "502-empty", "429-text",
         "200-not-json", "401", "403-json", "method-not-found"],
)
async def test_errors_are_classified(handler: Callable[[httpx.Request], httpx.Response],
                                     expected: type[Exception]) -> None:
    async with client_for(handler) as client:
        with pytest.raises(expected):
            await client.get_logs(0, 10, "0x318b469BBa396AEc2C60342F9441be36A1945174")


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
    ids=lambda e: type(e).__name__,
)
async def test_transport_failures_are_transient(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with client_for(handler) as client:
        with pytest.raises(TransientChainError):
            await client.block_number()


async def test_malformed_log_entry_is_transient() -> None:
    async with client_for(replying(200, {"result": [{"address": "0x00"}]})) as client:
        with pytest.raises(TransientChainError, match="malformed"):
            await client.get_logs(0, 1, "0x318b469BBa396AEc2C60342F9441be36A1945174")


async def test_unsupported_url_is_fatal() -> None:
    async with JsonRpcChainClient("ftp://node.test/") as client:
        with pytest.raises(FatalChainError):
            await client.block_number()


# The wordings behind defect 3, verbatim from public sources, and what each one says would work.
PROVIDER_REFUSALS = [
    ({"code": -32602, "message": "query exceeds max block range 5000"},  # reth
     RangeHint(span_limit=5000, span_limited=True)),
    ({"code": -32602, "message": "query exceeds max results 20000, retry with the range 22382105-22382515"},  # reth
     RangeHint(suggested=(22382105, 22382515))),
    ({"code": -32600, "message": "You can make eth_getLogs requests with up to a 500 block range. Based on your "
      "parameters, this block range should work: [0x1312d00, 0x1312ef3]"},  # Alchemy
     RangeHint(span_limit=500, suggested=(0x1312D00, 0x1312EF3), span_limited=True)),
    ({"code": -32602, "message": "eth_getLogs is limited to 0 - 50 blocks range"},  # 1rpc
     RangeHint(span_limit=50, span_limited=True)),
    ({"code": 35, "message": "ranges over 10000 blocks are not supported on freetier"},  # dRPC
     RangeHint(span_limit=10000, span_limited=True)),
    ({"code": -32000, "message": "block range is bigger than maxBlockRange"},  # Scroll's geth
     RangeHint(span_limited=True)),
    ({"code": -32614, "message": "eth_getLogs is limited to a 10,000 range"},  # QuickNode
     RangeHint(span_limit=10000, span_limited=True)),
]


@pytest.mark.parametrize("error, hint", PROVIDER_REFUSALS, ids=lambda e: str(e)[:40] if isinstance(e, dict) else "")
def test_provider_refusals_are_range_limits_with_their_hint(error: dict[str, Any], hint: RangeHint) -> None:
    assert classify_rpc_error(error) is RangeTooLargeError
    assert range_hint(error) == hint
    raised = rpc_error("eth_getLogs", error)
    assert isinstance(raised, RangeTooLargeError) and raised.hint == hint


def test_block_range_takes_the_hint() -> None:
    span = BlockRange(2000, grow_after=1)
    span.refused(2000, RangeHint(span_limit=50), first=10)
    assert (span.current, span.ceiling) == (50, 50)
    span.succeeded()
    assert span.current == 50  # a stated limit is a ceiling: never asked beyond again
    result_capped = BlockRange(2000, grow_after=1)
    result_capped.refused(2000, RangeHint(suggested=(10, 109)), first=10)
    assert (result_capped.current, result_capped.ceiling) == (100, 2000)
    result_capped.refused(100, RangeHint(suggested=(99, 120)), first=10)  # a range for another start
    assert result_capped.current == 50  # ... is no hint for this one: halve


def test_a_span_refusal_without_a_number_is_bisected_not_doubled_into() -> None:
    span = BlockRange(2000, grow_after=1)
    refused_spans = []
    for _ in range(40):  # a provider that serves 50 blocks and says only "too wide"
        if span.current > 50:
            refused_spans.append(span.current)
            span.refused(span.current, RangeHint(span_limited=True))
        else:
            span.succeeded()
    assert span.current == span.ceiling == 50
    assert len(refused_spans) <= 10  # halving down, then a bisection (doubling kept hitting the wall)
