"""A market's published point in chain terms: what a core taking over must not tell clients again."""

from __future__ import annotations

from typing import Any

from perpstream.chain.events import Finality, IndexedEvent
from perpstream.history import ChainPublished, HistoryLog, StreamHistory
from tests.services.builders import delivery, meta, opened


def of(block: int, finality: Finality, *, log_index: int = 0, branch: str = "a", seq: int = 0) -> IndexedEvent:
    return delivery(opened(block, meta(block, log_index, branch=branch)), finality, seq)


def published(*deliveries: IndexedEvent) -> ChainPublished:
    point = ChainPublished()
    for indexed in deliveries:
        assert not point.told(indexed)
        assert point.mark(indexed)
        assert point.told(indexed) and not point.mark(indexed)  # told: marking it again moves nothing
    return point


def test_a_fresh_index_of_the_same_chain_is_told_up_to_where_the_old_core_got() -> None:
    # The old core published 10 and 11 pending, 10 final, 12 pending; it died before 11's and 12's final copies.
    point = published(of(10, "pending"), of(11, "pending"), of(10, "final"), of(12, "pending"))
    # A core indexing from the start delivers them in its own order (deep blocks: pending then final at once).
    assert point.told(of(10, "pending", seq=1)) and point.told(of(10, "final", seq=2))
    assert point.told(of(11, "pending", seq=3)) and not point.told(of(11, "final", seq=4))
    assert point.told(of(12, "pending")) and not point.told(of(13, "pending"))
    # Below the newest final copy, an event on another branch is told too: its block is as deep as a final's.
    assert point.told(of(9, "pending", branch="b"))


def test_a_reorg_is_told_to_those_who_saw_the_event_pending_and_the_event_again_on_its_new_block() -> None:
    point = published(of(10, "pending"), of(11, "pending"))
    assert point.told(of(11, "reverted", branch="b"))  # never published pending: nobody to tell
    assert not point.told(of(11, "reverted"))
    point.mark(of(11, "reverted"))
    assert point.told(of(11, "reverted"))  # told once
    assert not point.told(of(11, "pending", branch="b"))  # the event mined again elsewhere is news


def test_final_copies_forget_the_pending_events_they_pass_and_the_point_survives_json() -> None:
    point = published(of(10, "pending"), of(11, "pending", log_index=1), of(12, "pending"), of(11, "final", log_index=1))
    assert list(point.pending.values()) == [(12, 0)]
    again = ChainPublished.from_json(point.to_json())
    assert again == point
    assert again.told(of(11, "pending", log_index=1)) and again.told(of(12, "pending"))
    assert not again.told(of(12, "final"))


class Relay:
    def __init__(self) -> None:
        self.points: list[tuple[str, str]] = []

    def snapshot(self, *_: Any) -> None:
        pass

    def chain_published(self, market_id: str, point: ChainPublished) -> None:
        self.points.append((market_id, point.to_json()))


def test_on_a_bus_the_published_point_is_what_the_bus_had_and_each_market_keeps_its_own() -> None:
    relay = Relay()
    history = StreamHistory.on_bus(HistoryLog("e", size=10, ttl_ms=60_000), relay, now_ms=lambda: 0,
                                   chain_published={"btc": published(of(10, "pending"))})
    assert history.told("btc", of(10, "pending", seq=7)) and not history.told("eth", of(10, "pending", seq=7))
    with history.chain_delivery("eth", of(10, "pending", seq=7)):
        assert relay.points == []  # kept after the delivery's messages, not before
    assert history.told("eth", of(10, "pending")) and not history.told("eth", of(10, "final"))
    assert [market for market, _ in relay.points] == ["eth"]
    with history.chain_delivery("btc", of(10, "pending", seq=7)):  # told: nothing new for the bus to keep
        pass
    assert [market for market, _ in relay.points] == ["eth"]
    assert ChainPublished.from_json(relay.points[0][1]).told(of(10, "pending"))


def test_in_one_process_a_delivery_was_told_when_its_seq_was_published() -> None:
    history = StreamHistory.in_memory(size=10, ttl_s=60, now_ms=lambda: 0)
    assert not history.told("btc", of(10, "pending", seq=3))
    with history.chain_delivery("btc", of(10, "pending", seq=3)):
        pass
    assert history.told("btc", of(10, "pending", seq=3)) and not history.told("btc", of(11, "pending", seq=4))
    assert not history.told("btc", of(10, "pending", seq=0))  # without a seq: never placed, always news
