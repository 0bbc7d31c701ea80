"""Build the quart-trio application that hypercorn serves."""

from __future__ import annotations

import trio
from quart import Response, g, has_request_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from perpstream.web.context import AppContext
from perpstream.web.dashboard import add_dashboard_routes
from perpstream.web.ops_routes import add_ops_routes
from perpstream.web.rest_routes import add_rest_routes, error_response
from perpstream.web.ws_routes import add_websocket_routes

__all__ = ["create_app"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _add_http_errors(app: QuartTrio) -> None:
    """Unknown routes, wrong methods and the like answer in the API's JSON envelope, not HTML."""

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        status = exc.code or 500
        # A WebSocket handler's failure comes here too, outside any HTTP request.
        asked = request if has_request_context() else websocket
        message = {404: f"no route {asked.path}", 405: f"{asked.method} is not allowed on {asked.path}"}.get(
            status, exc.description or exc.name or "error")
        response = error_response(status, code, message)
        if status == 405 and (allowed := exc.get_headers()):
            response.headers.update({k: v for k, v in allowed if k.lower() == "allow"})
        return response


def _add_http_latency(app: QuartTrio, context: AppContext) -> None:
    """Every HTTP request's latency by route template (bounded: unknown paths are one label)."""

    @app.before_request
    async def started() -> None:
        g.started = trio.current_time()

    @app.after_request
    async def finished(response: Response) -> Response:
        started_at = getattr(g, "started", None)
        if started_at is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            method = request.method if request.method in _METHODS else "other"
            context.metrics.http_latency.labels(rule, method, f"{response.status_code // 100}xx").observe(
                trio.current_time() - started_at)
        return response


def create_app(context: AppContext, *, streams: bool = True) -> QuartTrio:
    """The HTTP and WebSocket application over a running actor tree.

    ``streams=False``: health, metrics and debug only (a core, whose clients are its edges).
    """
    app = QuartTrio("perpstream")
    _add_http_errors(app)
    _add_http_latency(app, context)
    add_ops_routes(app, context)
    if streams:
        add_rest_routes(app, context)
        add_websocket_routes(app, context)
        add_dashboard_routes(app)
    return app
