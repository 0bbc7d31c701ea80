"""The dashboard's routes, without a browser: the page and its files are served, nothing else."""

from __future__ import annotations

import re

import pytest
from quart_trio import QuartTrio

from perpstream.web.dashboard import STATIC_DIR, add_dashboard_routes


@pytest.fixture(params=["static", None], ids=["default-static-folder", "no-static-folder"])
def app(request: pytest.FixtureRequest) -> QuartTrio:
    """The routes work whether or not the app was built with a static folder of its own."""
    app = QuartTrio("perpstream", static_folder=request.param)
    add_dashboard_routes(app)
    return app


async def test_the_page_is_served_at_the_root_with_a_strict_policy(app: QuartTrio) -> None:
    response = await app.test_client().get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = await response.get_data(as_text=True)
    assert (STATIC_DIR / "index.html").read_text(encoding="utf-8") == page
    # No inline script or style: the policy would block them.
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and "<style" not in page and " style=" not in page


async def test_every_file_the_page_links_is_served_with_its_type(app: QuartTrio) -> None:
    client = app.test_client()
    page = await (await client.get("/")).get_data(as_text=True)
    linked = re.findall(r'(?:src|href)="(static/[^"]+)"', page)
    assert sorted(linked) == ["static/dashboard.css", "static/dashboard.js"]
    types = {}
    for path in linked:
        response = await client.get("/" + path)
        assert response.status_code == 200, path
        assert await response.get_data() == (STATIC_DIR / path.removeprefix("static/")).read_bytes()
        types[path] = response.mimetype
    assert types == {"static/dashboard.css": "text/css", "static/dashboard.js": "text/javascript"}


@pytest.mark.parametrize("path", ["/static/missing.js", "/static/../dashboard.py", "/static/%2e%2e/dashboard.py",
                                  "/static/..%2fdashboard.py"])
async def test_nothing_outside_the_static_directory_is_served(app: QuartTrio, path: str) -> None:
    response = await app.test_client().get(path)
    assert response.status_code == 404
