"""One WebSocket connection: its subscriptions, its writer, its reader.

Backpressure lives here. Every stream the client subscribes to is two topic
subscriptions (snapshots, conflated; events, queued) attached to one
:class:`actors.Sink`; one writer task per connection drains the sink and is
the only task that writes to the socket. Actors publish without ever
waiting for this writer:

- a slow client's snapshot subscriptions hold only the newest frame, and the
  frame it finally gets says how many it skipped (``conflated``);
- its event subscriptions queue up to ``ws.event_buffer`` frames; one more
  closes the subscription with ``overflow``, and the writer sends ``goodbye``
  (``slow_consumer``) and closes with 1013;
- a client that stops reading altogether blocks the writer inside the
  server's send; the connection guard (``perpstream.web.server``) cuts the
  socket after ``ws.send_timeout``, the framework cancels this handler, and
  the subscriptions are closed on the way out, so the memory is freed.

Limits (``perpstream.web.limits``): every subscription counts against the
client address's allowance, and subscribe/unsubscribe requests draw on this
connection's token bucket; over either, the client gets an ``error`` with
``retry_after_s``, a ``goodbye`` and close 4429.

Replies to the client's own messages (``pong``, ``error``, acks) and
server-initiated closes go through a small private control topic on the
same sink, so the writer stays the only sender and ordering is preserved.

Offsets: every stream frame carries its stream's ``offset``, and the writer
sends a stream's frames in offset order, never one at or below the last it
sent (a snapshot and an event published back to back may be pending on two
subscriptions; a resumed stream's replay overlaps what arrives live). A
new subscription is held — live frames are taken and kept, not sent —
until its start is written: ``connected``, then the missed events and the
snapshot (resuming) or the snapshot and the events published after it (new),
then what was held.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import attrs
import trio

from actors import Policy, Sink, Subscription, SubscriptionClosed, Topic
from perpstream.history import Recovery
from perpstream.protocol import (
    Channel,
    CloseCode,
    Connected,
    Error,
    Frame,
    Goodbye,
    Message,
    Pong,
    Resumed,
    Subscribed,
    Unsubscribed,
    encode,
)
from perpstream.streams import Since, StreamKey
from perpstream.web.client_messages import (
    ClientMessageError,
    Ping,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)
from perpstream.web.context import AppContext
from perpstream.web.limits import Refusal, TokenBucket
from perpstream.web.stream import GuardedStream, text_frame

__all__ = ["Connection", "LimitError", "WebSocketIO", "limit_error", "log_refusal"]

log = logging.getLogger("perpstream.web.connection")

_CONTROL_CAPACITY = 64


@attrs.frozen
class WebSocketIO:
    """The socket operations a connection needs (quart's websocket, or a test double).

    ``raw`` is the connection's guarded socket stream when the server has
    one: data frames then go straight to it, framed here, instead of down
    the ASGI stack one message at a time.
    """

    send: Callable[[str], Awaitable[None]]
    receive: Callable[[], Awaitable[str | bytes]]
    close: Callable[[int, str], Awaitable[None]]
    raw: GuardedStream | None = None


@attrs.frozen(kw_only=True)
class LimitError(Error):
    """An ``error`` for a limit the client went over: it also says when to try again."""

    retry_after_s: float


def limit_error(refusal: Refusal, request_id: int | str | None = None) -> LimitError:
    return LimitError(code=refusal.code, message=refusal.message, id=request_id,
                      retry_after_s=round(refusal.retry_after_s, 3))


def log_refusal(logger: logging.Logger, client: str, refusal: Refusal, cooldown_s: float) -> None:
    """Each refusal at debug; the one that cools an address down once, at warning, for operators."""
    if refusal.starts_cooldown:
        logger.warning("cooling down %s for %.0f s: it keeps hitting limits (last: %s)", client, cooldown_s,
                       refusal.code)
    else:
        logger.debug("refused %s: %s", client, refusal.code)


@attrs.frozen
class _Close:
    """A control item: send ``goodbye`` (if a reason is given), then close."""

    code: int
    goodbye: str | None


class _Stream:
    """One subscribed stream: its two subscriptions, its ``seq``, the last offset sent."""

    __slots__ = ("key", "snapshots", "events", "seq", "resources", "last_offset", "held")

    def __init__(self, key: StreamKey, snapshots: Subscription[Frame], events: Subscription[Frame]) -> None:
        self.key = key
        self.snapshots = snapshots
        self.events = events
        self.seq = 0
        self.resources = AsyncExitStack()
        self.last_offset = 0
        #: Live frames taken before the stream's start was written (None: started).
        self.held: list[tuple[Frame, int]] | None = []

    def render(self, frame: Frame, skipped: int = 0) -> bytes:
        self.seq += 1
        return frame.render_bytes(self.seq, skipped)

    def fresh(self, frame: Frame) -> bool:
        """Whether ``frame`` comes after everything sent on this stream (and note it as sent)."""
        if not frame.offset:
            return True  # not a stream frame: never a repeat
        if frame.offset <= self.last_offset:
            return False
        self.last_offset = frame.offset
        return True


def _by_offset(item: tuple[Frame, int]) -> int:
    return item[0].offset


class Connection:
    """Serves one WebSocket until the client leaves, misbehaves, or the server stops."""

    def __init__(
        self, io: WebSocketIO, context: AppContext, *, endpoint: str, multiplexed: bool, client: str = "local"
    ) -> None:
        """``client`` is the address whose allowance this connection's subscriptions count against."""
        self.io = io
        self.context = context
        self.endpoint = endpoint
        self.multiplexed = multiplexed
        self.client = client
        limits = context.config.limits
        self._requests = TokenBucket(limits.subscribe_rate_per_s, limits.subscribe_burst, context.clock.now())
        self.sink = Sink()
        self.streams: dict[str, _Stream] = {}
        self._by_subscription: dict[Subscription[Frame], _Stream] = {}
        self._control_topic: Topic[object] = Topic("control", policy=Policy.QUEUE, capacity=_CONTROL_CAPACITY)
        self._control = self._control_topic.subscribe(self.sink)
        self._system_seq = 0
        self.malformed = 0
        self.closing = False
        self.closed = False

    # ------------------------------------------------------------ public

    async def serve(self, first: StreamKey | None, since: Since | None = None) -> None:
        """Run until closed; ``first`` is the stream of a single-stream path, ``since`` where it resumes."""
        metrics = self.context.metrics
        metrics.connections.labels(self.endpoint).inc()
        self.context.connections.add(self)
        try:
            if first is not None:
                await self._subscribe(first, request_id=None, ack=False, since=since)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop, nursery.cancel_scope)
                await self._write_loop()
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer reset the socket under a write, or the guard cut it: the client left
        finally:
            if not self.closed:
                metrics.closes.labels("peer").inc()  # the client left, or the network or the guard cut it
            self.closed = True
            self.context.connections.discard(self)
            metrics.connections.labels(self.endpoint).dec()
            with trio.CancelScope(shield=True):
                for stream in list(self.streams.values()):
                    await self._drop(stream)
                self._control.close()

    def close(self, code: int, goodbye: str | None) -> None:
        """Ask the writer to say ``goodbye`` and close (from any task, never blocks).

        The reader stops taking requests: a client flooding a connection that
        is already closing (say, over a limit) earns no further answers or strikes.
        """
        self.closing = True
        self._control_topic.publish(_Close(code, goodbye))

    # ------------------------------------------------------------ writing

    async def _send(self, payload: bytes) -> None:
        raw = self.io.raw
        if raw is None:
            await self.io.send(payload.decode("utf-8"))
            return
        data = text_frame(payload)
        if not raw.try_write(data):
            await raw.write(data)

    async def _flush(self) -> None:
        raw = self.io.raw
        if raw is not None and raw.backlog:
            await raw.flush()

    def _system(self, message: Message) -> bytes:
        """A connection-level message: on a single-stream path it shares that stream's seq."""
        frame = encode(message, channel=Channel.SYSTEM, ts=self.context.clock.now_ms())
        if not self.multiplexed and self.streams:
            return next(iter(self.streams.values())).render(frame)
        self._system_seq += 1
        return frame.render_bytes(self._system_seq)

    def reply(self, message: Message) -> None:
        """Queue a connection-level message for the writer."""
        self._control_topic.publish(message)

    async def _write_loop(self) -> None:
        while True:
            await self._flush()
            await self.sink.wait()
            for subscription in self.sink.pending():
                if subscription is self._control:
                    if await self._drain_control():
                        return
                    continue
                stream = self._by_subscription.get(subscription)
                if stream is None:
                    continue  # unsubscribed while pending
                try:
                    frames = self._take(stream)
                except SubscriptionClosed:
                    await self._close_slow_consumer(stream.key.name)
                    return
                if stream.held is not None:
                    stream.held += frames
                    if len(stream.held) > self.context.config.ws.event_buffer:
                        await self._close_slow_consumer(stream.key.name)
                        return
                    continue
                await self._send_frames(stream, frames)

    async def _close_slow_consumer(self, stream: str | None) -> None:
        """Over a queue's bound: ``goodbye`` (``slow_consumer``) and close 1013."""
        self.context.metrics.slow_consumer_closes.inc()
        if stream is not None:
            log.info("closing a slow consumer on %s (%s)", self.endpoint, stream)
        await self._close_now(CloseCode.SLOW_CONSUMER, "slow_consumer")

    def _take(self, stream: _Stream) -> list[tuple[Frame, int]]:
        """Everything a stream has for the writer, in offset order; raises SubscriptionClosed on overflow."""
        frames: list[tuple[Frame, int]] = []
        for subscription in (stream.events, stream.snapshots):
            while True:
                try:
                    delivery = subscription.take()
                except SubscriptionClosed as closed:
                    if closed.reason == "overflow":
                        raise
                    break
                if delivery is None:
                    break
                frames.append((delivery.item, delivery.skipped))
        if len(frames) > 1:
            frames.sort(key=_by_offset)
        return frames

    async def _send_frames(self, stream: _Stream, frames: list[tuple[Frame, int]]) -> None:
        metrics = self.context.metrics
        for frame, skipped in frames:
            if not stream.fresh(frame):
                continue
            if skipped:
                metrics.conflated.inc(skipped)
            payload = stream.render(frame, skipped)
            await self._send(payload)
            metrics.observe_sent(stream.key.channel.value, len(payload), frame.ts, self.context.clock.now_ms())

    async def _drain_control(self) -> bool:
        """Send queued control messages; True once the connection is closed."""
        while True:
            try:
                delivery = self._control.take()
            except SubscriptionClosed:
                # The client flooded us with requests and never read the replies.
                await self._close_slow_consumer(None)
                return True
            if delivery is None:
                return False
            item = delivery.item
            if isinstance(item, _Start):
                if self.streams.get(item.stream.key.name) is item.stream:
                    await self._start(item)
                continue
            if isinstance(item, _Close):
                await self._close_now(item.code, item.goodbye)
                return True
            assert isinstance(item, Message)
            payload = self._system(item)
            await self._send(payload)
            self.context.metrics.count_sent(Channel.SYSTEM.value, len(payload))

    async def _start(self, start: _Start) -> None:
        """A new subscription's first frames: ``connected``, what it missed or the snapshot, what was held."""
        stream = start.stream
        payload = stream.render(self._connected_frame(stream.key, start.recovery))
        await self._send(payload)
        self.context.metrics.count_sent(stream.key.channel.value, len(payload))
        frames: list[tuple[Frame, int]] = []
        recovery = start.recovery
        if recovery is not None and recovery.recovered:
            frames += ((frame, 0) for frame in recovery.frames)
            assert start.since is not None
            stream.last_offset = start.since.offset  # the client has everything up to here
        if start.catch_up is not None and start.catch_up.recovered:
            frames += ((frame, 0) for frame in start.catch_up.frames)
        latest = self.context.topics(stream.key).snapshots.latest
        if latest is not None:
            frames.append((latest, 0))
        held, stream.held = stream.held or [], None
        frames += held
        frames.sort(key=_by_offset)
        await self._send_frames(stream, frames)

    async def _close_now(self, code: int, goodbye: str | None) -> None:
        if goodbye is not None:
            payload = self._system(Goodbye(reason=goodbye))
            await self._send(payload)
            self.context.metrics.count_sent(Channel.SYSTEM.value, len(payload))
        await self._flush()
        self.closed = True
        self.context.metrics.closes.labels(str(code)).inc()
        await self.io.close(code, goodbye or "")

    # ------------------------------------------------------------ reading

    async def _read_loop(self, cancel_scope: trio.CancelScope) -> None:
        ws = self.context.config.ws
        markets = self.context.market_ids
        while not self.closing:
            frame = await self.io.receive()
            if self.closing:
                return
            try:
                request = parse_client_message(
                    frame, max_bytes=ws.max_frame_bytes, markets=markets, multiplexed=self.multiplexed
                )
            except ClientMessageError as exc:
                self.reply(Error(code=exc.code, message=exc.message, id=exc.id))
                if exc.malformed:
                    self.context.metrics.malformed.inc()
                    self.malformed += 1
                    if self.malformed >= ws.max_malformed:
                        self.close(CloseCode.POLICY, "repeated_malformed_input")
                        return
                continue
            if isinstance(request, Ping):
                self.reply(Pong(id=request.id))
                continue
            if (wait := self._requests.take(self.context.clock.now())) > 0:
                limits = self.context.config.limits
                self._refuse(self.context.limits.strike(self.client, self.context.clock.now(), Refusal(
                    "rate_limited", f"at most {limits.subscribe_burst} subscribe/unsubscribe requests at once, "
                    f"then {limits.subscribe_rate_per_s:g} per second", wait)), request.id)
                return
            if isinstance(request, Subscribe):
                await self._subscribe(request.stream, request_id=request.id, ack=True, since=request.since)
            elif isinstance(request, Unsubscribe):
                stream = self.streams.get(request.stream.name)
                if stream is None:
                    self.reply(Error(code="not_subscribed", message=f"not subscribed to {request.stream.name}",
                                     id=request.id))
                else:
                    await self._drop(stream)
                    self.reply(Unsubscribed(id=request.id, subscription=request.stream.name))

    # ------------------------------------------------------------ subscriptions

    async def _subscribe(
        self, key: StreamKey, *, request_id: int | str | None, ack: bool, since: Since | None = None
    ) -> None:
        limit = self.context.config.ws.max_subscriptions_per_connection
        if key.name in self.streams:
            self.reply(Error(code="already_subscribed", message=f"already subscribed to {key.name}", id=request_id))
            return
        limits = self.context.limits
        account = key.key if key.channel is Channel.POSITIONS else None
        if len(self.streams) >= limit:
            self._refuse(limits.strike(self.client, self.context.clock.now(), Refusal(
                "too_many_subscriptions", f"at most {limit} subscriptions per connection", 0.0)), request_id)
            return
        if (refusal := limits.subscribe(self.client, account, self.context.clock.now())) is not None:
            self._refuse(refusal, request_id)
            return
        resources = AsyncExitStack()
        resources.callback(lambda: limits.unsubscribe(self.client, account, self.context.clock.now()))
        try:
            await resources.enter_async_context(self.context.attach(key))
        except Exception as exc:
            await resources.aclose()
            log.warning("cannot attach %s: %r", key.name, exc)
            self.reply(Error(code="unavailable", message=f"{key.name} is not available right now", id=request_id))
            if not self.multiplexed:
                # A single-stream connection without its stream is useless:
                # tell the client to come back later rather than leave it empty.
                self.close(CloseCode.TRY_AGAIN_LATER, "unavailable")
            return
        topics = self.context.topics(key)
        stream = _Stream(key, topics.snapshots.subscribe(self.sink), topics.events.subscribe(self.sink))
        stream.resources = resources
        self.streams[key.name] = stream
        self.context.metrics.subscriptions.labels(key.channel.value).inc()
        self._by_subscription[stream.snapshots] = stream
        self._by_subscription[stream.events] = stream
        if ack:
            self.reply(Subscribed(id=request_id, subscription=key.name))
        # Live first (the stream is held), then what the client missed: what
        # is published meanwhile arrives live, and the writer drops a repeat.
        recovery = None if since is None else await self.context.history.recover(key, since)
        # A new subscriber starts from the snapshot; the events published
        # since it (before the subscription existed) come from the history.
        latest = topics.snapshots.latest
        catch_up = None
        if since is None and latest is not None and latest.offset:
            catch_up = await self.context.history.recover(key, Since(latest.epoch, latest.offset))
        # Through the control topic, so the start follows the ack.
        self._control_topic.publish(_Start(stream, since, recovery, catch_up))

    def _refuse(self, refusal: Refusal, request_id: int | str | None) -> None:
        """Over a limit: ``error`` with ``retry_after_s``, then ``goodbye`` and close 4429."""
        self.context.metrics.limit_refusals.labels(refusal.code).inc()
        log_refusal(log, self.client, refusal, self.context.config.limits.cooldown_s)
        self.reply(limit_error(refusal, request_id))
        self.close(CloseCode.TOO_MANY, refusal.code)

    def _connected_frame(self, key: StreamKey, recovery: Recovery | None) -> Frame:
        field = key.key_field
        interval_ms, now_ms = self.context.interval_ms(key.channel), self.context.clock.now_ms()
        return encode(
            Connected(interval_ms=interval_ms, server_time=now_ms) if recovery is None
            else Resumed(interval_ms=interval_ms, server_time=now_ms, recovered=recovery.recovered),
            channel=key.channel,
            ts=self.context.clock.now_ms(),
            key=None if field is None or key.key is None else (field, key.key),
        )

    async def _drop(self, stream: _Stream) -> None:
        if self.streams.pop(stream.key.name, None) is not None:
            self.context.metrics.subscriptions.labels(stream.key.channel.value).dec()
        self._by_subscription.pop(stream.snapshots, None)
        self._by_subscription.pop(stream.events, None)
        stream.snapshots.close()
        stream.events.close()
        await stream.resources.aclose()


@attrs.frozen
class _Start:
    """A control item: write a new subscription's start (see :meth:`Connection._start`)."""

    stream: _Stream
    since: Since | None
    recovery: Recovery | None
    #: A new subscriber's events after the snapshot it starts from.
    catch_up: Recovery | None = None
