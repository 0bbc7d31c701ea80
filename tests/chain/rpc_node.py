"""A JSON-RPC node in front of a DevChain, speaking the real wire format.

It answers the four methods the indexer uses from the embedded chain, so a
JsonRpcChainClient can index a real eth-tester chain — in-process through an
``httpx.MockTransport`` or over loopback TCP for a separate process — and it
can refuse wide eth_getLogs ranges the way hosted nodes do.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import h11
import httpx
import trio

from perpstream.chain import RawLog
from perpstream.devchain import DevChain

# Infura's reply to an eth_getLogs with too many results (as logged in the wild).
INFURA_TOO_MANY_RESULTS = {"code": -32005, "message": "query returned more than 10000 results"}


def _log_json(log: RawLog) -> dict[str, Any]:
    return {
        "address": log.address.lower(),
        "topics": ["0x" + t.hex() for t in log.topics],
        "data": "0x" + log.data.hex(),
        "blockNumber": hex(log.block_number),
        "blockHash": log.block_hash,
        "transactionHash": log.tx_hash,
        "transactionIndex": "0x0",
        "logIndex": hex(log.log_index),
        "removed": False,
    }


class DevChainNode:
    """JSON-RPC over a DevChain; ``max_logs`` makes it refuse bigger eth_getLogs replies."""

    def __init__(
        self,
        chain: DevChain,
        *,
        max_logs: int | None = None,
        refusal: dict[str, Any] = INFURA_TOO_MANY_RESULTS,
    ) -> None:
        self._client = chain.client()
        self.max_logs = max_logs
        self._refusal = refusal
        self.get_logs_calls: list[tuple[int, int, bool]] = []  # (from, to, refused)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        method, params = request["method"], request.get("params", [])
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
        if method == "eth_chainId":
            reply["result"] = hex(await self._client.chain_id())
        elif method == "eth_blockNumber":
            reply["result"] = hex(await self._client.block_number())
        elif method == "eth_getBlockByNumber":
            header = await self._client.get_block_header(int(params[0], 16))
            reply["result"] = None if header is None else {
                "number": hex(header.number),
                "hash": header.hash,
                "parentHash": header.parent_hash,
                "timestamp": hex(header.timestamp),
                "transactions": [],
            }
        elif method == "eth_getLogs":
            query = params[0]
            first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            logs = await self._client.get_logs(first, last, query["address"])
            refused = self.max_logs is not None and len(logs) > self.max_logs
            self.get_logs_calls.append((first, last, refused))
            if refused:
                reply["error"] = self._refusal
            else:
                reply["result"] = [_log_json(entry) for entry in logs]
        else:
            message = f"the method {method} does not exist/is not available"
            reply["error"] = {"code": -32601, "message": message}
        return reply

    def transport(self) -> httpx.MockTransport:
        async def respond(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=await self.handle(json.loads(request.content)))

        return httpx.MockTransport(respond)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve HTTP on a loopback port; reports the URL through task_status."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        task_status.started(f"http://127.0.0.1:{port}/")
        await trio.serve_listeners(partial(self._serve_connection), listeners)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                payload = json.dumps(await self.handle(json.loads(body))).encode()
                headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=payload)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return  # the client went away (e.g. killed): nothing to answer
        finally:
            await stream.aclose()
