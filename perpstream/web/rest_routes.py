"""REST snapshots: the same data the streams carry, for clients that poll."""

from __future__ import annotations

import json
from decimal import Decimal

import trio
from quart import Response, request
from quart_trio import QuartTrio

from perpstream.protocol import Channel, Frame, PositionsUpdate, PositionView, encode
from perpstream.services.open_positions import BadPageRequest, OpenPositionsUnavailable, PageRequest, page_of
from perpstream.services.queries import RESTART_WAIT_S, MarketQueries, MarketUnavailable
from perpstream.streams import BadStreamParameter, StreamKey, parse_address, parse_market_id
from perpstream.web.context import AppContext

__all__ = ["add_rest_routes", "error_response", "json_response"]

# An edge asking for an account nobody watches waits this long for the core's first snapshot.
_FIRST_SNAPSHOT_WAIT_S = 5.0


def json_response(body: str | object, status: int = 200) -> Response:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return Response(text, status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> Response:
    """The JSON error envelope every HTTP error uses: ``{"error": {"code", "message"}}``."""
    return json_response({"error": {"code": code, "message": message}}, status)


def _latest_json(context: AppContext, key: StreamKey) -> object:
    frame: Frame | None = context.topics(key).snapshots.latest
    return None if frame is None else json.loads(frame.json())


def _queries(context: AppContext) -> MarketQueries:
    return MarketQueries.of(context.registry, context.clock.now_ms)


def _market_json(context: AppContext, market_id: str, channel: Channel) -> object:
    """The market's price (its age computed now) or stats, as the stream would send them now.

    While the market is restarting, the stream's last snapshot stands in.
    """
    queries = _queries(context)
    try:
        message = queries.price_message(market_id) if channel is Channel.PRICES else queries.stats(market_id)
    except MarketUnavailable:
        return _latest_json(context, StreamKey(channel, market_id))
    if message is None:
        return None
    return json.loads(encode(message, channel=channel, ts=context.clock.now_ms(), key=("market_id", market_id)).json())


def _market_body(context: AppContext, market_id: str) -> dict[str, object]:
    market = context.config.market(market_id)
    assert market is not None
    return {
        "market_id": market.id,
        "base": market.base,
        "pyth_feed_id": market.pyth_feed_id,
        "max_leverage": str(market.max_leverage),
        "maintenance_margin_ratio": str(market.maintenance_margin_ratio),
        "liquidation_fee_ratio": str(market.liquidation_fee_ratio),
        "price": _market_json(context, market.id, Channel.PRICES),
        "stats": _market_json(context, market.id, Channel.MARKET_STATS),
    }


async def _positions_from_stream(context: AppContext, address: str) -> Response:
    """On an edge: the account's newest ``positions_update``, as the core published it."""
    key = StreamKey(Channel.POSITIONS, address)
    try:
        async with context.attach(key):
            snapshots = context.topics(key).snapshots
            # The core starts the account's session once it sees the edge's interest.
            with snapshots.subscribe() as first, trio.move_on_after(_FIRST_SNAPSHOT_WAIT_S):
                while snapshots.latest is None:
                    await first.sink.wait()
            latest = snapshots.latest
    except Exception:  # noqa: BLE001 (the bus is unreachable: said as a 503, like a market that is down)
        latest = None
    if latest is None:
        return error_response(503, "unavailable", f"the positions of {address} are not available right now")
    return json_response(latest.json())


def add_rest_routes(app: QuartTrio, context: AppContext) -> None:
    @app.get("/api/v1/markets")
    async def markets() -> Response:
        return json_response({"markets": [_market_body(context, m) for m in context.market_ids]})

    @app.get("/api/v1/markets/<market_id>")
    async def market(market_id: str) -> Response:
        try:
            known = parse_market_id(market_id, context.market_ids)
        except BadStreamParameter as exc:
            return error_response(404, exc.code, exc.message)
        return json_response(_market_body(context, known))

    @app.get("/api/v1/liquidations")
    async def liquidations() -> Response:
        latest = _latest_json(context, StreamKey(Channel.LIQUIDATIONS))
        if latest is None:
            return error_response(503, "not_ready", "the first liquidation scan has not completed yet")
        return json_response(latest)

    @app.get("/api/v1/positions/<user_address>")
    async def positions_of(user_address: str) -> Response:
        try:
            address = parse_address(user_address)
        except BadStreamParameter as exc:
            return error_response(400, exc.code, exc.message)
        if context.follow is not None:
            return await _positions_from_stream(context, address)
        await _queries(context).wait_available(context.market_ids, RESTART_WAIT_S)
        views: list[PositionView] = []
        for market_id in context.market_ids:
            try:
                views.extend(_queries(context).positions_of(address, market_id))
            except MarketUnavailable:
                return error_response(503, "market_unavailable", f"market {market_id} is unavailable")
        message = PositionsUpdate(
            positions=tuple(views),
            total_collateral=sum((v.collateral for v in views), Decimal(0)),
            total_unrealized_pnl=sum((v.unrealized_pnl or Decimal(0) for v in views), Decimal(0)),
            total_equity=sum((v.equity if v.equity is not None else v.collateral for v in views), Decimal(0)),
        )
        frame = encode(message, channel=Channel.POSITIONS, ts=context.clock.now_ms(), key=("user_address", address))
        return json_response(frame.json())

    @app.get("/api/v1/positions")
    async def open_positions() -> Response:
        """Every open position, ordered by position id; ``?limit=&after=`` pages through them."""
        try:
            page = PageRequest.parse(request.args)
        except BadPageRequest as exc:
            return error_response(400, "invalid_parameter", str(exc))
        try:
            listed = await context.open_positions()
        except OpenPositionsUnavailable as exc:
            return error_response(503, exc.code, exc.message)
        return json_response(page_of(listed, page))
