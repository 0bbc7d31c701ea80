"""The quart-trio application: WebSocket streams, REST snapshots, operations."""

from perpstream.web.app import create_app
from perpstream.web.context import AppContext
from perpstream.web.metrics import Metrics
from perpstream.web.server import ConnectionGuard, serve

__all__ = ["AppContext", "ConnectionGuard", "Metrics", "create_app", "serve"]
