from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpstream.feeds import SSEEvent, SSEParser, SSEProtocolError


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def test_data_event_defaults_to_message_type() -> None:
    assert parse(b"data: hello\n\n") == [SSEEvent("message", "hello", "")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert parse(b"data: one\ndata: two\ndata:\n\n") == [SSEEvent("message", "one\ntwo\n", "")]


def test_named_event_with_id() -> None:
    events = parse(b"event: error\nid: 42\ndata: Connection timeout reached (24h)\n\n")
    assert events == [SSEEvent("error", "Connection timeout reached (24h)", "42")]


def test_event_type_does_not_leak_into_the_next_event() -> None:
    events = parse(b"event: error\ndata: a\n\ndata: b\n\n")
    assert [event.event for event in events] == ["error", "message"]


def test_last_event_id_persists_until_changed() -> None:
    events = parse(b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n")
    assert [event.last_event_id for event in events] == ["7", "7", ""]


def test_id_containing_nul_is_ignored() -> None:
    assert parse(b"id: 1\ndata: a\n\nid: x\x00y\ndata: b\n\n")[1].last_event_id == "1"


def test_comments_and_keepalives_produce_nothing() -> None:
    assert parse(b": No update available\n\n:\n\n") == []


def test_event_without_data_is_not_dispatched() -> None:
    assert parse(b"event: ping\n\n") == []


def test_only_one_leading_space_is_stripped_and_field_without_colon_is_empty() -> None:
    assert parse(b"data:  two spaces\ndata\n\n") == [SSEEvent("message", " two spaces\n", "")]


def test_unknown_fields_are_ignored() -> None:
    assert parse(b"foo: bar\ndata: x\n\n") == [SSEEvent("message", "x", "")]


def test_retry_sets_reconnection_time_only_when_all_digits() -> None:
    parser = SSEParser()
    parser.feed(b"retry: 2500\n\n")
    assert parser.retry_ms == 2500
    parser.feed(b"retry: 3s\n\nretry: -1\n\n")
    assert parser.retry_ms == 2500


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_all_three_line_endings(newline: bytes) -> None:
    stream = b"event: x" + newline + b"data: 1" + newline + newline + b"data: 2" + newline + newline
    assert parse(stream) == [SSEEvent("x", "1", ""), SSEEvent("message", "2", "")]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    assert parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [SSEEvent("message", "a\nb", "")]


def test_every_single_cut_gives_the_same_events() -> None:
    whole = parse(STREAM)
    for cut in range(len(STREAM) + 1):
        assert parse(STREAM[:cut], STREAM[cut:]) == whole


def test_multibyte_character_split_between_chunks() -> None:
    encoded = "data: 65 000 €\n\n".encode()
    cut = encoded.index("€".encode()) + 1
    assert parse(encoded[:cut], encoded[cut:]) == [SSEEvent("message", "65 000 €", "")]


def test_leading_byte_order_mark_is_dropped_once() -> None:
    assert parse(b"\xef\xbb", b"\xbfdata: a\n\n") == [SSEEvent("message", "a", "")]


def test_incomplete_event_is_held_until_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: par") == []
    assert parser.feed(b"tial\n") == []
    assert parser.feed(b"\n") == [SSEEvent("message", "partial", "")]


def test_unbounded_line_is_refused() -> None:
    parser = SSEParser(max_event_chars=100)
    with pytest.raises(SSEProtocolError):
        parser.feed(b"data: " + b"x" * 200)


def test_unbounded_event_is_refused() -> None:
    parser = SSEParser(max_event_chars=100)
    with pytest.raises(SSEProtocolError):
        parser.feed(b"data: xxxxxxxxxx\n" * 20)


STREAM = (
    ": keep-alive\r\n\r\n"
    'event: message\r\nid: 1\r\ndata: {"parsed": [1,\r\ndata: 2]}\r\n\r\n'
    "data: caf\u00e9\n\n"
    "retry: 100\r"
    "event: error\rdata: lagged\r\r"
).encode()


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[start:end] for start, end in itertools.pairwise(bounds)]
    assert (
        parse(*chunks)
        == parse(STREAM)
        == [
            SSEEvent("message", '{"parsed": [1,\n2]}', "1"),
            SSEEvent("message", "caf\u00e9", "1"),
            SSEEvent("error", "lagged", "1"),
        ]
    )
