"""The quart-trio application: WebSocket streams, REST snapshots, operations."""

from perpstream.web.app import create_app

__all__ = ["create_app"]
