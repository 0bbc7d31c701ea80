"""A JSON-RPC node in front of the dev chain, on a loopback port, that misbehaves on command.

The answers come from ``tests.chain.rpc_node.DevChainNode`` (the real wire
format over a real eth-tester chain); this adds the failures a hosted node
shows: ``faults[n]`` is how the n-th request (counting from 1) fails, and
``up``/``down`` start and stop the listener (down: connections are refused
and every open one is cut).
"""

from __future__ import annotations

import json
from typing import Literal

import h11
import trio

from perpstream.devchain import DevChain
from tests.chain.rpc_node import DevChainNode

from .loopback import LoopbackServer, respond, serve_requests

Fault = Literal["http_503", "rpc_internal_error", "rate_limited", "not_json", "deep_json", "hang", "reset"]

_RPC_INTERNAL = {"code": -32603, "message": "internal error"}
_RATE_LIMITED = {"code": -32005, "message": "daily request count exceeded, request rate limited"}


class FaultyRpcNode(LoopbackServer):
    def __init__(self, chain: DevChain) -> None:
        super().__init__()
        self._node = DevChainNode(chain)
        self.faults: dict[int, Fault] = {}
        self.requests = 0
        self.faults_served: list[Fault] = []
        self.delay_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        await serve_requests(stream, self._serve_request)

    async def _serve_request(self, stream: trio.SocketStream, conn: h11.Connection, body: bytes) -> bool:
        self.requests += 1
        fault = self.faults.get(self.requests)
        if fault is not None:
            self.faults_served.append(fault)
        if fault == "hang":
            await trio.sleep_forever()
        if fault == "reset":
            return False  # hang up without an answer
        await trio.sleep(self.delay_s)
        await self._answer(stream, conn, json.loads(body), fault)
        return True

    async def _answer(self, stream: trio.SocketStream, conn: h11.Connection, request: dict[str, object],
                      fault: Fault | None) -> None:
        if fault == "http_503":
            await respond(stream, conn, 503, b"<html>503 Service Temporarily Unavailable</html>", "text/html")
            return
        if fault == "not_json":
            await respond(stream, conn, 200, b"upstream connect error or disconnect/reset", "text/plain")
            return
        if fault == "deep_json":
            await respond(stream, conn, 200, b"[" * 50_000 + b"]" * 50_000, "application/json")
            return
        reply = await self._node.handle(request)  # type: ignore[arg-type]
        if fault == "rpc_internal_error":
            reply = {"jsonrpc": "2.0", "id": request.get("id"), "error": _RPC_INTERNAL}
        elif fault == "rate_limited":
            reply = {"jsonrpc": "2.0", "id": request.get("id"), "error": _RATE_LIMITED}
        status = 429 if fault == "rate_limited" else 200
        await respond(stream, conn, status, json.dumps(reply).encode(), "application/json")
