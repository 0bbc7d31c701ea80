"""Build the quart-trio application that hypercorn serves."""

from __future__ import annotations

from quart_trio import QuartTrio

__all__ = ["create_app"]


def create_app() -> QuartTrio:
    """The HTTP and WebSocket application."""
    app = QuartTrio("perpstream")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up and its event loop answers."""
        return {"status": "ok"}

    return app
