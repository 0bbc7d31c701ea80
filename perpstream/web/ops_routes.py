"""Operations: liveness, readiness, metrics, and the debug actor tree."""

from __future__ import annotations

import hmac
import ipaddress

from quart import Response, request
from quart_trio import QuartTrio

from actors import ActorNotFound, ActorNotRunning
from perpstream.web.context import AppContext
from perpstream.web.rest_routes import error_response, json_response

__all__ = ["add_ops_routes", "render_tree"]


def render_tree(snapshot: dict[str, object]) -> str:
    """The actor tree as indented text, one actor per line, for a terminal."""
    lines: list[str] = []

    def walk(node: dict[str, object], depth: int) -> None:
        mailbox = node["mailbox"]
        assert isinstance(mailbox, dict)
        failure = node.get("last_failure")
        parts = [
            f"{'  ' * depth}{node['name']} [{node['kind']}] {node['state']}",
            f"inc={node['incarnation']} restarts={node['restarts']}",
            f"mailbox={mailbox['used']}/{mailbox['capacity']}",
            f"in={node['messages_in']} out={node['messages_out']}",
        ]
        if "restart_in" in node:
            parts.append(f"restart_in={float(node['restart_in']):.1f}s")  # type: ignore[arg-type]
        if isinstance(failure, dict):
            parts.append(f"last_failure={failure['type']}: {failure['message']}")
        lines.append("  ".join(parts))
        for child in node.get("children", []) or []:  # type: ignore[union-attr,attr-defined]
            walk(child, depth + 1)

    root = snapshot.get("root")
    if isinstance(root, dict):
        walk(root, 0)
    topics = snapshot.get("topics") or []
    lines.append("")
    lines.append("topics:")
    for topic in topics:  # type: ignore[union-attr,attr-defined]
        lines.append(
            f"  {topic['name']} [{topic['policy']}/{topic['capacity']}] "
            f"subscribers={topic['subscribers']} published={topic['published']}"
        )
    return "\n".join(lines) + "\n"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def add_ops_routes(app: QuartTrio, context: AppContext) -> None:
    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness: the process is up and its event loop answers."""
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        """Readiness: prices fresh, indexer caught up, nothing failing."""
        reasons: list[str] = []
        for check in context.readiness_checks:
            reasons.extend(await check())
        if reasons:
            return json_response({"status": "not_ready", "reasons": reasons}, 503)
        return json_response({"status": "ready"})

    def refused() -> Response | None:
        """Debug routes need the bearer token when one is set, else a loopback peer."""
        if context.debug_token:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return error_response(401, "unauthorized", "bearer token required")
            supplied = header.removeprefix("Bearer ").strip()
            if not hmac.compare_digest(supplied.encode(), context.debug_token.encode()):
                return error_response(401, "unauthorized", "wrong token")
            return None
        peer = (request.scope.get("client") or ("",))[0]
        if not _is_loopback(peer):
            return error_response(403, "forbidden", "debug routes answer loopback peers only")
        return None

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text; ``metrics.access = "debug"`` puts it behind the /debug rule."""
        if context.config.metrics.access == "debug" and (denied := refused()) is not None:
            return denied
        return Response(context.metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/debug/actors")
    async def debug_actors() -> Response:
        if (denied := refused()) is not None:
            return denied
        snapshot = context.registry.snapshot()
        snapshot["connections"] = {
            "open": len(context.connections),
            "clients": len(context.limits),
            "cut_slow": context.guard_stats().get("cut_slow", 0),
            "cut_idle": context.guard_stats().get("cut_idle", 0),
        }
        if context.describe_deployment is not None:
            snapshot["deployment"] = await context.describe_deployment()
        if request.args.get("format") == "text":
            return Response(render_tree(snapshot), content_type="text/plain; charset=utf-8")
        return json_response(snapshot)

    @app.post("/debug/actors/<path:name>/restart")
    async def debug_restart(name: str) -> Response:
        if (denied := refused()) is not None:
            return denied
        try:
            context.registry.fail_actor(name, "restart requested through /debug")
        except ActorNotFound:
            return error_response(404, "unknown_actor", f"no actor {name!r}")
        except ActorNotRunning:
            return error_response(409, "not_running", f"{name!r} is not running")
        return json_response({"status": "failing", "actor": name}, 202)
