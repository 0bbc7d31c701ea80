"""Build the quart-trio application that hypercorn serves."""

from __future__ import annotations

from quart_trio import QuartTrio

from perpstream.web.context import AppContext
from perpstream.web.dashboard import add_dashboard_routes
from perpstream.web.ops_routes import add_ops_routes
from perpstream.web.rest_routes import add_rest_routes
from perpstream.web.ws_routes import add_websocket_routes

__all__ = ["create_app"]


def create_app(context: AppContext) -> QuartTrio:
    """The HTTP and WebSocket application over a running actor tree."""
    app = QuartTrio("perpstream")
    add_ops_routes(app, context)
    add_rest_routes(app, context)
    add_websocket_routes(app, context)
    add_dashboard_routes(app)
    return app
