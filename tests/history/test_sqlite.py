"""The durable epoch: what a restart (or a kill) keeps of the chain-derived streams' history."""

from __future__ import annotations

from pathlib import Path

from perpstream.history import HistoryLog, SqliteHistory
from tests.history.test_log import STREAM, offsets, publish
from perpstream.streams import Since


def reopen(path: Path, now_ms: int = 0, *, size: int = 10) -> tuple[SqliteHistory, HistoryLog]:
    file = SqliteHistory(path)
    return file, file.load(size=size, ttl_ms=60_000, now_ms=now_ms)


def test_a_restart_keeps_the_epoch_the_events_and_never_reuses_an_offset(tmp_path: Path) -> None:
    file, log = reopen(tmp_path / "h.sqlite3")
    events = [publish(log, STREAM, 0) for _ in range(3)]
    snapshot = publish(log, STREAM, 0, event=False)
    epoch = log.epoch
    file.close()  # as a kill leaves it: no shutdown step exists

    file, log = reopen(tmp_path / "h.sqlite3")
    assert log.epoch == epoch
    assert offsets(log, STREAM, Since(epoch, events[0])) == events[1:]
    assert offsets(log, STREAM, Since(epoch, snapshot)) == []  # a snapshot's offset is still a valid position
    assert publish(log, STREAM, 0) > snapshot
    file.close()


def test_trimming_is_kept_too(tmp_path: Path) -> None:
    file, log = reopen(tmp_path / "h.sqlite3", size=2)
    events = [publish(log, STREAM, 0) for _ in range(4)]
    file.close()
    file, log = reopen(tmp_path / "h.sqlite3", size=2)
    assert offsets(log, STREAM, Since(log.epoch, events[0])) is None
    assert offsets(log, STREAM, Since(log.epoch, events[1])) == events[2:]
    file.close()


def test_a_delivery_s_messages_and_its_seq_are_kept_together_or_not_at_all(tmp_path: Path) -> None:
    file, log = reopen(tmp_path / "h.sqlite3")
    with file.transaction():
        publish(log, STREAM, 0)
        file.mark_published("btc-usdc-perp", 7)
    try:
        with file.transaction():
            publish(log, STREAM, 0)
            raise RuntimeError("the process died here")
    except RuntimeError:
        pass
    file.close()
    file, log = reopen(tmp_path / "h.sqlite3")
    assert file.published_through("btc-usdc-perp") == 7 and log.retained(STREAM) == 1
    assert file.published_through("eth-usdc-perp") == 0  # a delivery to several markets: each says for itself
    file.close()


def test_a_new_file_is_a_new_epoch(tmp_path: Path) -> None:
    first, second = SqliteHistory(tmp_path / "a.sqlite3"), SqliteHistory(tmp_path / "b.sqlite3")
    assert first.epoch != second.epoch
    first.close()
    second.close()
