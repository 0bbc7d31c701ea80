"""The dashboard: one static page, served by the daemon, that watches the streams.

The page is plain HTML, CSS and JavaScript with no build step, so the daemon
serves it straight from the package's ``static`` directory. It talks to the
service only through the public wire contract (``/api/v1/markets`` once per
connection, then one multiplexed ``/api/v1/ws``), exactly as any other
client would; nothing here knows about its data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from quart import abort, Response, send_from_directory
from quart_trio import QuartTrio

__all__ = ["STATIC_DIR", "add_dashboard_routes"]

STATIC_DIR: Final = Path(__file__).with_name("static")

# The page loads only its own script and stylesheet and talks only to its own
# origin ('self' covers same-origin ws:/wss: in CSP 3), so a strict policy
# costs nothing and stops injected markup from running or phoning home.
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def add_dashboard_routes(app: QuartTrio) -> None:
    """Serve the dashboard at ``/`` and its files at ``/static/<file>``."""
    # Quart's own static route does conditional GETs and refuses paths that
    # leave the directory; point it at the dashboard's files.
    app.static_folder = STATIC_DIR

    async def static_file(filename: str) -> Response:
        try:
            return await app.send_static_file(filename)
        except OSError:
            # A name the filesystem cannot even look up (ENAMETOOLONG, …) is
            # simply not one of the dashboard's files.
            abort(404)

    if "static" in app.view_functions:
        app.view_functions["static"] = static_file
    else:
        app.add_url_rule("/static/<path:filename>", "static", static_file)

    @app.get("/")
    async def dashboard() -> Response:
        response = await send_from_directory(STATIC_DIR, "index.html")
        response.headers.update(_PAGE_HEADERS)
        return response
