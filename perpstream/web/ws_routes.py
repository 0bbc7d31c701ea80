"""The WebSocket routes: four single-stream paths and the multiplexed one.

Before a handshake is accepted, the client's address is worked out (behind
a trusted proxy, from ``X-Forwarded-For``) and checked: an address cooling
down after repeated limit hits gets HTTP 429 with ``Retry-After`` and no
WebSocket at all; one over its connection limit is accepted, told why
(``error`` with ``retry_after_s``) and closed 4429, because a browser cannot
read a refused handshake's status.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from quart import Response, websocket
from quart_trio import QuartTrio

from perpstream.protocol import Channel, CloseCode, Error, Message, encode
from perpstream.streams import BadStreamParameter, Since, StreamKey, parse_since
from perpstream.web.connection import Connection, WebSocketIO, limit_error, log_refusal
from perpstream.web.context import AppContext
from perpstream.web.rest_routes import error_response

__all__ = ["add_websocket_routes"]

log = logging.getLogger("perpstream.web.ws_routes")


def _io(context: AppContext) -> WebSocketIO:
    async def close(code: int, reason: str) -> None:
        await websocket.close(code, reason)

    raw = context.stream_of(websocket.scope.get("client"))
    return WebSocketIO(send=websocket.send, receive=websocket.receive, close=close, raw=raw)


async def _refuse(context: AppContext, error: Message, code: str, close_code: int) -> None:
    """Accept, explain, close: a browser cannot read a refused handshake's status."""
    frame = encode(error, channel=Channel.SYSTEM, ts=context.clock.now_ms())
    context.metrics.rejected.labels(str(close_code)).inc()
    context.metrics.closes.labels(str(close_code)).inc()
    await websocket.send(frame.render(1))
    await websocket.close(close_code, code)


def _client_address(context: AppContext) -> str:
    peer = (websocket.scope.get("client") or ("unknown",))[0]
    return context.addresses.resolve(peer, websocket.headers.getlist("X-Forwarded-For"))


def _since_from_query() -> Since | None:
    """``?epoch=E&offset=N``: where a single-stream path resumes (both or neither)."""
    args = websocket.args
    epoch, offset = args.get("epoch"), args.get("offset")
    if epoch is None and offset is None:
        return None
    if epoch is None or offset is None:
        missing = "epoch" if epoch is None else "offset"
        raise BadStreamParameter("invalid_since", f"{missing}: resuming needs both epoch and offset",
                                 CloseCode.INVALID_PARAMETER)
    return parse_since(epoch, offset)


async def _serve(context: AppContext, endpoint: str, key: Callable[[], StreamKey] | None) -> Response | None:
    client = _client_address(context)
    limits = context.limits
    if (cooling := limits.cooling_down(client, context.clock.now())) > 0:
        context.metrics.limit_refusals.labels("cooling_down").inc()
        response = error_response(429, "cooling_down",
                                  f"too many limits hit from this address; retry after {math.ceil(cooling)} s")
        response.headers["Retry-After"] = str(math.ceil(cooling))
        return response
    await websocket.accept()
    if (refusal := limits.connect(client, context.clock.now())) is not None:
        context.metrics.limit_refusals.labels(refusal.code).inc()
        log_refusal(log, client, refusal, context.config.limits.cooldown_s)
        await _refuse(context, limit_error(refusal), refusal.code, CloseCode.TOO_MANY)
        return None
    try:
        try:
            stream = key() if key is not None else None
            since = _since_from_query() if key is not None else None
        except BadStreamParameter as exc:
            await _refuse(context, Error(code=exc.code, message=exc.message), exc.code, exc.close_code)
            return None
        connection = Connection(_io(context), context, endpoint=endpoint, multiplexed=key is None, client=client)
        await connection.serve(stream, since)
    finally:
        limits.disconnect(client, context.clock.now())
    return None


def add_websocket_routes(app: QuartTrio, context: AppContext) -> None:
    markets = context.market_ids

    @app.websocket("/api/v1/ws/prices/<path:market_id>")
    async def ws_prices(market_id: str) -> Response | None:
        return await _serve(context, "prices", lambda: StreamKey.parse("prices", {"market_id": market_id}, markets))

    @app.websocket("/api/v1/ws/market-stats/<path:market_id>")
    async def ws_market_stats(market_id: str) -> Response | None:
        return await _serve(context, "market-stats",
                     lambda: StreamKey.parse("market_stats", {"market_id": market_id}, markets))

    @app.websocket("/api/v1/ws/positions/<path:user_address>")
    async def ws_positions(user_address: str) -> Response | None:
        return await _serve(context, "positions",
                     lambda: StreamKey.parse("positions", {"user_address": user_address}, markets))

    @app.websocket("/api/v1/ws/liquidations")
    async def ws_liquidations() -> Response | None:
        return await _serve(context, "liquidations", lambda: StreamKey(Channel.LIQUIDATIONS))

    @app.websocket("/api/v1/ws")
    async def ws_multiplexed() -> Response | None:
        return await _serve(context, "multiplexed", None)
