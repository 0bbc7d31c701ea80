"""Scrape-time metrics: bounded labels, counters that only grow."""

from __future__ import annotations

from typing import Any

from perpstream.web.live_metrics import SessionRestarts, actor_rows, guard_rows
from perpstream.web.metrics import Metrics


def _node(name: str, kind: str, restarts: int = 0, used: int = 0, children: list[Any] | None = None) -> dict[str, Any]:
    return {"name": name, "kind": kind, "restarts": restarts, "mailbox": {"used": used, "capacity": 64},
            "children": children or []}


def _tree(*sessions: dict[str, Any]) -> dict[str, Any]:
    return _node("root", "supervisor", children=[
        _node("markets/btc-usdc-perp", "market", restarts=2, used=3),
        _node("sessions", "supervisor", children=list(sessions)),
    ])


def _render(rows: list[Any]) -> str:
    metrics = Metrics()
    metrics.add_live_state(lambda: rows)
    return metrics.render().decode()


def test_sessions_are_summed_and_no_account_becomes_a_label() -> None:
    alice, bob = "sessions/0x" + "a1" * 20, "sessions/0x" + "b2" * 20
    text = _render(list(actor_rows(_tree(_node(alice, "session", 1, 5), _node(bob, "session", 2, 9)),
                                   SessionRestarts())))
    assert "0xa1" not in text.lower() and "0xb2" not in text.lower()
    assert 'perpstream_actor_restarts_total{actor="markets/btc-usdc-perp"} 2.0' in text
    assert "# TYPE perpstream_actor_restarts_total counter" in text
    assert "perpstream_sessions 2.0" in text
    assert "perpstream_session_restarts_total 3.0" in text
    assert "perpstream_session_mailbox_depth_max 9.0" in text


def test_session_restarts_never_fall_as_sessions_come_and_go() -> None:
    total = SessionRestarts()
    assert total.update({"a": 1, "b": 2}) == 3
    assert total.update({"a": 3}) == 5  # b left: its restarts stay counted
    assert total.update({"a": 0, "b": 1}) == 6  # a is a new session (its count started again)
    assert total.update({}) == 6


def test_guard_counters_appear_only_when_the_guard_counts_them() -> None:
    text = _render(list(guard_rows({"cut_slow": 4, "cut_idle": 1})))
    assert "perpstream_ws_cut_slow_total 4.0" in text and "perpstream_ws_cut_idle_total 1.0" in text
    assert "protocol_errors" not in text
    assert "perpstream_ws_protocol_errors_total 7.0" in _render(list(guard_rows({"protocol_errors": 7})))
