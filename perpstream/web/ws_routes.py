"""The WebSocket routes: four single-stream paths and the multiplexed one."""

from __future__ import annotations

from collections.abc import Callable

from quart import websocket
from quart_trio import QuartTrio

from perpstream.protocol import Channel, CloseCode, Error, encode
from perpstream.streams import BadStreamParameter, StreamKey
from perpstream.web.connection import Connection, WebSocketIO
from perpstream.web.context import AppContext

__all__ = ["add_websocket_routes"]


def _io(context: AppContext) -> WebSocketIO:
    async def close(code: int, reason: str) -> None:
        await websocket.close(code, reason)

    raw = context.stream_of(websocket.scope.get("client"))
    return WebSocketIO(send=websocket.send, receive=websocket.receive, close=close, raw=raw)


async def _refuse(context: AppContext, code: str, message: str, close_code: int) -> None:
    """Accept, explain, close: a browser cannot read a refused handshake's status."""
    frame = encode(Error(code=code, message=message), channel=Channel.SYSTEM, ts=context.clock.now_ms())
    context.metrics.rejected.labels(str(close_code)).inc()
    await websocket.send(frame.render(1))
    await websocket.close(close_code, code)


async def _serve(context: AppContext, endpoint: str, key: Callable[[], StreamKey] | None) -> None:
    await websocket.accept()
    client = (websocket.scope.get("client") or ("unknown",))[0]
    if not context.admit(client):
        limit = context.config.ws.max_connections_per_client
        await _refuse(context, "too_many_connections", f"at most {limit} connections per client", CloseCode.TOO_MANY)
        return
    try:
        try:
            stream = key() if key is not None else None
        except BadStreamParameter as exc:
            await _refuse(context, exc.code, exc.message, exc.close_code)
            return
        connection = Connection(_io(context), context, endpoint=endpoint, multiplexed=key is None)
        await connection.serve(stream)
    finally:
        context.leave(client)


def add_websocket_routes(app: QuartTrio, context: AppContext) -> None:
    markets = context.market_ids

    @app.websocket("/api/v1/ws/prices/<path:market_id>")
    async def ws_prices(market_id: str) -> None:
        await _serve(context, "prices", lambda: StreamKey.parse("prices", {"market_id": market_id}, markets))

    @app.websocket("/api/v1/ws/market-stats/<path:market_id>")
    async def ws_market_stats(market_id: str) -> None:
        await _serve(context, "market-stats",
                     lambda: StreamKey.parse("market_stats", {"market_id": market_id}, markets))

    @app.websocket("/api/v1/ws/positions/<path:user_address>")
    async def ws_positions(user_address: str) -> None:
        await _serve(context, "positions",
                     lambda: StreamKey.parse("positions", {"user_address": user_address}, markets))

    @app.websocket("/api/v1/ws/liquidations")
    async def ws_liquidations() -> None:
        await _serve(context, "liquidations", lambda: StreamKey(Channel.LIQUIDATIONS))

    @app.websocket("/api/v1/ws")
    async def ws_multiplexed() -> None:
        await _serve(context, "multiplexed", None)
