"""A JSON-RPC proxy in front of a real node that refuses eth_getLogs the way providers do.

Everything is forwarded to the node; an eth_getLogs whose span (or result
count) is over the provider's limit gets that provider's refusal instead,
in its own words and code, with the numbers of this proxy's limit so that a
client following the provider's hint asks for what would really work.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import attrs
import h11
import httpx
import trio

from tests.reliability.loopback import LoopbackServer, respond, serve_requests

__all__ = ["Provider", "RangeLimitProxy", "reth_max_results", "span_providers"]

#: (first, last, logs the node returned) -> the refusal, or None to pass the reply on.
Refusal = Callable[[int, int, list[dict[str, Any]]], dict[str, Any] | None]


@attrs.frozen
class Provider:
    name: str
    refuse: Refusal


def _span_limit(limit: int, error: Callable[[int, int], dict[str, Any]]) -> Refusal:
    def refuse(first: int, last: int, logs: list[dict[str, Any]]) -> dict[str, Any] | None:
        return error(first, last) if last - first + 1 > limit else None

    return refuse


def reth_max_results(limit: int) -> Provider:
    """reth's result cap: the range that would fit is named in the refusal."""

    def refuse(first: int, last: int, logs: list[dict[str, Any]]) -> dict[str, Any] | None:
        if len(logs) <= limit:
            return None
        blocks = sorted(int(entry["blockNumber"], 16) for entry in logs)
        fits = blocks[limit] - 1  # the last block before the (limit+1)-th log's block
        return {"code": -32602,
                "message": f"query exceeds max results {limit}, retry with the range {first}-{max(first, fits)}"}

    return Provider("reth-max-results", refuse)


def span_providers(limit: int) -> list[Provider]:
    """Each real provider's span-limit refusal, enforcing ``limit`` blocks."""
    return [
        Provider("reth", _span_limit(limit, lambda first, last: {
            "code": -32602, "message": f"query exceeds max block range {limit}"})),
        Provider("alchemy", _span_limit(limit, lambda first, last: {
            "code": -32600,
            "message": f"You can make eth_getLogs requests with up to a {limit} block range. Based on your "
                       f"parameters, this block range should work: [{hex(first)}, {hex(first + limit - 1)}]"})),
        Provider("1rpc", _span_limit(limit, lambda first, last: {
            "code": -32602, "message": f"eth_getLogs is limited to 0 - {limit} blocks range"})),
        Provider("drpc", _span_limit(limit, lambda first, last: {
            "code": 35, "message": f"ranges over {limit} blocks are not supported on freetier"})),
        Provider("scroll-geth", _span_limit(limit, lambda first, last: {
            "code": -32000, "message": "block range is bigger than maxBlockRange"})),
    ]


class RangeLimitProxy(LoopbackServer):
    """Forwards to ``upstream``; refuses eth_getLogs as ``provider`` does."""

    def __init__(self, upstream: str, provider: Provider) -> None:
        super().__init__()
        self._upstream = upstream
        self.provider = provider
        self.get_logs: list[tuple[int, int, bool]] = []  # (first, last, refused)
        self._http = httpx.AsyncClient(timeout=30.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        await serve_requests(stream, self._serve_request)

    async def _serve_request(self, stream: trio.SocketStream, conn: h11.Connection, body: bytes) -> bool:
        reply = await self._answer(json.loads(body))
        await respond(stream, conn, 200, json.dumps(reply).encode(), "application/json")
        return True

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = (await self._http.post(self._upstream, json=request)).json()
        if request.get("method") != "eth_getLogs" or "result" not in reply:
            return reply
        query = request["params"][0]
        first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        error = self.provider.refuse(first, last, reply["result"])
        self.get_logs.append((first, last, error is not None))
        if error is None:
            return reply
        return {"jsonrpc": "2.0", "id": request.get("id"), "error": error}
