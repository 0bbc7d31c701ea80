"""The history's rules, pure: offsets, bounds, and when a resume recovers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from perpstream.history import HistoryLog
from perpstream.protocol import Channel, FundingRateUpdate, MarketStats, encode
from perpstream.streams import BadStreamParameter, Since, parse_since

STREAM = "market_stats:btc-usdc-perp"
OTHER = "market_stats:eth-usdc-perp"


def funding(n: int = 0) -> FundingRateUpdate:
    """An event of the market-stats stream."""
    return FundingRateUpdate(funding_rate=Decimal(n), previous_funding_rate=Decimal(0), funding_index=Decimal(1),
                             source="model")


def stats() -> MarketStats:
    """A snapshot of the market-stats stream."""
    return MarketStats(price=None, long_open_interest=Decimal(0), short_open_interest=Decimal(0),
                       open_interest_usd=None, skew=Decimal(0), funding_rate=Decimal(0),
                       predicted_funding_rate=Decimal(0), funding_index=Decimal(1), open_positions=0,
                       volume_24h_usd=Decimal(0), stale=True)


def publish(log: HistoryLog, stream: str, now_ms: int, *, event: bool = True) -> int:
    """Publish one event (or snapshot) as StreamTopics does; its offset."""
    offset = log.allocate(stream, now_ms)
    frame = encode(funding() if event else stats(), channel=Channel.MARKET_STATS, ts=now_ms,
                   position=(offset, log.epoch))
    if event:
        log.record(stream, frame, now_ms)
    return offset


def offsets(log: HistoryLog, stream: str, since: Since, now_ms: int = 0) -> list[int] | None:
    recovery = log.recover(stream, since, now_ms)
    return [f.offset for f in recovery.frames] if recovery.recovered else None


def test_offsets_increase_strictly_within_each_stream_and_frames_carry_them() -> None:
    log = HistoryLog("e1", size=10, ttl_ms=60_000)
    a = [publish(log, STREAM, 0), publish(log, STREAM, 0, event=False), publish(log, STREAM, 0)]
    b = [publish(log, OTHER, 0), publish(log, OTHER, 0)]
    assert a == sorted(set(a)) and b == sorted(set(b))
    frame = log.recover(STREAM, Since("e1", 0), 0).frames[0]
    assert frame.json().startswith('{"type":"funding_rate_update","channel":"market_stats","ts":0,"offset":1,'
                                   '"epoch":"e1",')


def test_a_resume_gets_exactly_the_events_after_its_offset() -> None:
    log = HistoryLog("e1", size=10, ttl_ms=60_000)
    first = publish(log, STREAM, 0)
    snapshot = publish(log, STREAM, 0, event=False)
    later = [publish(log, STREAM, 0) for _ in range(3)]
    assert offsets(log, STREAM, Since("e1", first)) == later  # snapshots are not kept: the topic has the newest
    assert offsets(log, STREAM, Since("e1", snapshot)) == later
    assert offsets(log, STREAM, Since("e1", later[-1])) == []  # up to date: recovered, nothing missed


def test_another_epoch_or_an_offset_ahead_of_the_stream_does_not_recover() -> None:
    log = HistoryLog("e1", size=10, ttl_ms=60_000)
    last = publish(log, STREAM, 0)
    assert offsets(log, STREAM, Since("e0", 0)) is None
    assert offsets(log, STREAM, Since("e1", last + 1)) is None


def test_events_trimmed_by_count_or_age_end_recovery_from_before_them() -> None:
    log = HistoryLog("e1", size=3, ttl_ms=10_000)
    published = [publish(log, STREAM, 0) for _ in range(5)]  # the first two trimmed by count
    assert log.retained(STREAM) == 3
    assert offsets(log, STREAM, Since("e1", published[0])) is None  # it missed published[1]
    assert offsets(log, STREAM, Since("e1", published[1])) == published[2:]
    newer = publish(log, STREAM, 8_000)
    # 11 s on: the three from t=0 aged out; the one from t=8 s is kept.
    assert offsets(log, STREAM, Since("e1", published[3]), now_ms=11_000) is None
    assert offsets(log, STREAM, Since("e1", published[4]), now_ms=11_000) == [newer]


def test_a_forgotten_stream_recovers_only_from_after_what_it_lost() -> None:
    log = HistoryLog("e1", size=10, ttl_ms=1_000)
    lost = publish(log, STREAM, 0)
    log.sweep(5_000)  # nothing kept and idle: forgotten
    assert log.streams == 0
    assert offsets(log, STREAM, Since("e1", lost - 1)) is None
    assert offsets(log, STREAM, Since("e1", lost)) == []
    assert offsets(log, "prices:never-seen", Since("e1", lost)) == []  # nothing of it was ever lost


def test_a_snapshot_only_stream_recovers_with_nothing_to_replay() -> None:
    log = HistoryLog("e1", size=10, ttl_ms=60_000)
    seen = publish(log, STREAM, 0, event=False)
    publish(log, STREAM, 0, event=False)
    assert offsets(log, STREAM, Since("e1", seen)) == []


@pytest.mark.parametrize(("epoch", "offset", "named"), [
    ("", 1, "epoch"), ("x" * 65, 1, "epoch"), (7, 1, "epoch"), ("e1", -1, "offset"), ("e1", "1e3", "offset"),
    ("e1", 2**53, "offset"), ("e1", True, "offset"), ("e1", 1.5, "offset"), ("e1", None, "offset"),
])
def test_a_bad_resume_position_is_refused_naming_the_key_and_the_range(epoch: object, offset: object,
                                                                       named: str) -> None:
    with pytest.raises(BadStreamParameter) as refused:
        parse_since(epoch, offset)
    assert refused.value.code == "invalid_since" and refused.value.message.startswith(f"{named}: ")
    assert ("0 to 9007199254740991" if named == "offset" else "1 to 64") in refused.value.message


def test_a_query_offset_is_decimal_text() -> None:
    assert parse_since("e1", "42") == Since("e1", 42)


def test_a_forgotten_stream_that_comes_back_still_knows_it_lost_events() -> None:
    log = HistoryLog("e1", size=100, ttl_ms=300_000)
    seen = log.allocate(STREAM, 0)  # the client's last message
    publish(log, STREAM, 0)  # an event it then missed...
    log.sweep(400_000)  # ...aged out, and the idle stream forgotten
    again = publish(log, STREAM, 400_000)  # the stream comes back with a new event
    assert offsets(log, STREAM, Since("e1", seen), now_ms=400_000) is None
    assert offsets(log, STREAM, Since("e1", again - 1), now_ms=400_000) == [again]
