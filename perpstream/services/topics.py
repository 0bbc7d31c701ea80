"""The two topics behind every stream, and the registry names of the service.

Each stream has a snapshot topic (conflated: a slow subscriber skips to the
newest state) and an events topic (queued: every event arrives, or the
subscriber is cut off as a slow consumer). Messages are encoded to a
:class:`~perpstream.protocol.Frame` once, at publish time, and the same
frame object reaches every subscriber.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from actors import Policy, Topic
from perpstream.history import StreamHistory
from perpstream.protocol import Frame, Message, encode
from perpstream.streams import StreamKey

__all__ = ["StreamPublisher", "StreamTopics", "encode_for", "record_event", "market_name", "session_name", "FEED", "INDEXER", "SCANNER", "SESSIONS", "SESSION_DIRECTORY"]

FEED = "feed"
INDEXER = "indexer"
SCANNER = "scanner"
SESSIONS = "sessions"
SESSION_DIRECTORY = "session-directory"


def market_name(market_id: str) -> str:
    """The registry name of a market's actor."""
    return f"markets/{market_id}"


def session_name(address: str) -> str:
    """The registry name of an account's session actor (EIP-55 address)."""
    return f"sessions/{address}"


class _TopicSource(Protocol):
    def topic(self, name: str, *, policy: Policy, capacity: int) -> Topic[Frame]: ...


@attrs.frozen
class StreamTopics:
    """A stream's snapshot and events topics: what a subscriber attaches to."""

    key: StreamKey
    snapshots: Topic[Frame]
    events: Topic[Frame]

    @classmethod
    def of(cls, source: _TopicSource, key: StreamKey, event_buffer: int) -> StreamTopics:
        """Get (or create) the stream's topics from a registry or an actor context."""
        return cls(
            key,
            source.topic(key.topic, policy=Policy.CONFLATE, capacity=1),
            source.topic(key.events_topic, policy=Policy.QUEUE, capacity=event_buffer),
        )


@attrs.frozen
class StreamPublisher:
    """Publishes a stream: each message encoded once, at the stream's next offset.

    Events are also kept in the stream's history for clients that resume
    (:mod:`perpstream.history`), and everything published is handed on to
    the history's relay, if it has one (another process's subscribers).
    """

    topics: StreamTopics
    history: StreamHistory

    @classmethod
    def of(cls, source: _TopicSource, key: StreamKey, event_buffer: int, history: StreamHistory) -> StreamPublisher:
        return cls(StreamTopics.of(source, key, event_buffer), history)

    @property
    def key(self) -> StreamKey:
        return self.topics.key

    def publish_snapshot(self, message: Message, ts: int) -> None:
        frame = encode_for(self.key, message, ts, self.history)
        self.history.snapshot(self.key, frame)
        self.topics.snapshots.publish(frame)

    def publish_event(self, message: Message, ts: int) -> None:
        frame = record_event(self.key, message, ts, self.history)
        self.topics.events.publish(frame)


def encode_for(key: StreamKey, message: Message, ts: int, history: StreamHistory) -> Frame:
    """``message`` encoded for ``key``'s stream, at the stream's next offset."""
    field = key.key_field
    stream_key = None if field is None or key.key is None else (field, key.key)
    return encode(message, channel=key.channel, ts=ts, key=stream_key, position=history.position(key))


def record_event(key: StreamKey, message: Message, ts: int, history: StreamHistory) -> Frame:
    """Keep an event in ``key``'s history without creating its topics (nobody may be watching)."""
    frame = encode_for(key, message, ts, history)
    history.record(key, frame)
    return frame
