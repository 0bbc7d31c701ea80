"""A ChainClient speaking JSON-RPC over HTTP (httpx; runs under trio).

Failures come out as the three error classes of :mod:`perpstream.chain.client`:
range limits (the indexer shrinks its eth_getLogs range), transient failures
(timeouts, connection errors, 5xx, rate limits: the indexer retries with
backoff) and fatal ones (the supervisor decides).
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from eth_utils import to_checksum_address

from perpstream.chain.client import (
    BlockHeader,
    FatalChainError,
    RawLog,
    TopicFilter,
    TransientChainError,
    encode_topic_filter,
)
from perpstream.chain.rpc_errors import classify_http_status, rpc_error

__all__ = ["JsonRpcChainClient"]


def _hex_to_bytes(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


def _parse_log(entry: dict[str, Any]) -> RawLog:
    return RawLog(
        address=to_checksum_address(entry["address"]),
        topics=tuple(_hex_to_bytes(t) for t in entry["topics"]),
        data=_hex_to_bytes(entry["data"]),
        block_number=int(entry["blockNumber"], 16),
        block_hash=entry["blockHash"].lower(),
        tx_hash=entry["transactionHash"].lower(),
        log_index=int(entry["logIndex"], 16),
    )


class JsonRpcChainClient:
    """ChainClient for an HTTP JSON-RPC endpoint (a node or a provider)."""

    def __init__(
        self,
        url: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        self._url = url
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout_s)
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> JsonRpcChainClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def chain_id(self) -> int:
        return int(await self._call("eth_chainId", []), 16)

    async def block_number(self) -> int:
        return int(await self._call("eth_blockNumber", []), 16)

    async def get_block_header(self, number: int) -> BlockHeader | None:
        block = await self._call("eth_getBlockByNumber", [hex(number), False])
        if block is None:
            return None
        try:
            return BlockHeader(
                number=int(block["number"], 16),
                hash=block["hash"].lower(),
                parent_hash=block["parentHash"].lower(),
                timestamp=int(block["timestamp"], 16),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TransientChainError(f"eth_getBlockByNumber: malformed block {block!r}") from exc

    async def get_logs(
        self,
        from_block: int,
        to_block: int,
        address: str,
        topics: TopicFilter | None = None,
    ) -> list[RawLog]:
        params: dict[str, Any] = {
            "fromBlock": hex(from_block),
            "toBlock": hex(to_block),
            "address": address,
        }
        if topics is not None:
            params["topics"] = encode_topic_filter(topics)
        entries = await self._call("eth_getLogs", [params])
        try:
            return [_parse_log(entry) for entry in entries]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TransientChainError(f"eth_getLogs: malformed log in reply: {exc}") from exc

    async def _call(self, method: str, params: list[Any]) -> Any:
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            response = await self._http.post(self._url, json=request)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise FatalChainError(f"{method}: bad RPC URL: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise TransientChainError(f"{method}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientChainError(f"{method}: {type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            body = None
        # Providers often send a JSON-RPC error with a 4xx/5xx status: the body says more.
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise rpc_error(method, error)
        if response.is_error:
            kind = classify_http_status(response.status_code)
            raise kind(f"{method}: HTTP {response.status_code}")
        if not isinstance(body, dict) or "result" not in body:
            raise TransientChainError(f"{method}: reply is not JSON-RPC: {response.text[:200]!r}")
        return body["result"]
