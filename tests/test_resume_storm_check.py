"""bench/resume_storm.py's gapless check: a zero it reports must mean something.

The benchmark itself needs the daemon and Node for minutes; its verdict on a
resumed client's events (against a stayer's on the same stream) is plain
data handling, checked here on made-up timelines.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def storm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("resume_storm", BENCH / "resume_storm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("resume_storm", module)
    spec.loader.exec_module(module)
    return module


def _witness(events: list[int], *, first: int = 1, last: int = 100) -> dict[str, Any]:
    return {"events": [[o, "position_opened"] for o in events], "first": first, "last": last, "open": True}


def _client(since: int, events: list[int], last: int = 100, live: int | None = None) -> dict[str, Any]:
    return {"since": {"epoch": "e", "offset": since}, "events": events, "last_offset": last, "live_offset": live}


def test_a_faithful_replay_has_no_mismatch(storm: ModuleType) -> None:
    check = storm._check(_client(10, [12, 15, 40]), _witness([5, 12, 15, 40]), history_size=100)
    assert (check["checked"], check["missing"], check["extra"], check["repeated"]) == (3, 0, 0, 0)
    assert check["should_recover"] == 1


def test_missing_extra_and_repeated_events_are_counted(storm: ModuleType) -> None:
    check = storm._check(_client(10, [5, 12, 12, 33]), _witness([5, 12, 15]), history_size=100)
    assert (check["missing"], check["extra"], check["repeated"]) == (1, 1, 2)


def test_events_beyond_either_side_are_not_judged(storm: ModuleType) -> None:
    # The client saw up to 20, the witness up to 30: the event at 25 is the witness's alone.
    check = storm._check(_client(10, [15], last=20), _witness([15, 25], last=30), history_size=100)
    assert (check["checked"], check["missing"], check["extra"]) == (1, 0, 0)


def test_a_witness_that_started_late_vouches_for_nothing(storm: ModuleType) -> None:
    check = storm._check(_client(10, [15]), _witness([15], first=12), history_size=100)
    assert (check["unverifiable"], check["should_recover"]) == (1, 0)


def test_more_missed_than_the_history_holds_need_not_recover(storm: ModuleType) -> None:
    check = storm._check(_client(10, []), _witness([11, 12, 13]), history_size=2)
    assert check["should_recover"] == 0


def test_what_came_live_after_the_resume_was_not_for_the_history_to_hold(storm: ModuleType) -> None:
    check = storm._check(_client(10, [11, 12, 13], live=12), _witness([11, 12, 13]), history_size=2)
    assert check["should_recover"] == 1


def test_witnesses_of_one_stream_are_compared_where_both_watched(storm: ModuleType) -> None:
    path = "/api/v1/ws/liquidations"
    workers = [{path: _witness([3, 12, 20], first=2, last=30)}, {path: _witness([12, 25], first=10, last=25)}]
    chosen, disagreements = storm._witness_of(workers)
    assert chosen[path] is workers[0][path]
    assert disagreements == [{"path": path, "range": [10, 25], "first_only": [(20, "position_opened")],
                              "other_only": [(25, "position_opened")]}]
