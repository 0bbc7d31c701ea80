"""Pyth prices from a Hermes server, over its v2 server-sent-events stream.

The thin I/O layer around the pure pieces: ``SSEParser`` (bytes → events),
``decode_hermes_payload`` (JSON → ``PriceUpdate``s), ``OracleOrderFilter``
(drop repeats and stale reorderings), ``RequestBudget`` (stay inside Pyth's
rate limit) and ``Backoff``. What this module adds is the life of a
connection, following what the Hermes server really does:

* open ``GET /v2/updates/price/stream?ids[]=…&ignore_invalid_price_ids=true``.
  Without that flag one unknown id makes Hermes answer ``404 Price ids not
  found`` for the whole request, so one delisted feed would cost every
  market its prices. Feeds Hermes leaves out of its answers (unknown, or
  delisted while the stream is open, which Hermes does silently) are
  reported as ``FeedStatus.missing_feeds``; the others carry on;
* once it answers 200, fill the gap since the last connection with
  ``GET /v2/updates/price/latest`` — the stream only carries what happens
  from now on — then read events until the stream ends;
* ``event:error`` events (a lagging consumer, a slot Hermes could not
  serve) are logged and the stream goes on: Hermes keeps sending after
  them. The body ends only after the 24 h limit (announced by
  ``Connection timeout reached (24h)``, logged at INFO as the routine it
  is), a slow-consumer disconnect, or a failure;
* any end is followed by a reconnect. A connection that delivered prices
  resets the backoff, so the routine 24 h close is followed by a prompt
  reconnect; failures in a row back off exponentially with jitter; a 429
  waits ``Retry-After``, or ``rate_limited_wait`` (Pyth's documented 60 s)
  when the server names no time; and every request of every path draws
  from one ``RequestBudget``.

Two watchdogs leave a stream that is open but useless: no bytes at all for
``read_timeout`` (Hermes sends a keep-alive comment after 15 s without an
event, so silence means a broken path), and no price for ``price_timeout``
(a server sending nothing but keep-alives: comments are not data).
Malformed events and entries are logged and skipped; updates for feeds that
were not asked for are ignored.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Collection, Iterable
from contextlib import aclosing
from email.utils import parsedate_to_datetime
from typing import Literal, cast

import attrs
import httpx
import trio

from perpstream.backoff import Backoff
from perpstream.domain.prices import normalize_feed_id
from perpstream.feeds.budget import RequestBudget
from perpstream.feeds.feed import FeedStatus, FeedStatusRecorder, OnUpdate
from perpstream.feeds.hermes_payload import (
    HERMES_SOURCE,
    HermesBatch,
    HermesPayloadError,
    decode_hermes_payload,
)
from perpstream.feeds.ordering import OracleOrderFilter
from perpstream.feeds.sse import SSEParser, SSEProtocolError

__all__ = ["DEFAULT_HERMES_URL", "HermesConfig", "HermesFeed"]

logger = logging.getLogger("perpstream.feeds.hermes")

DEFAULT_HERMES_URL = "https://hermes.pyth.network"
STREAM_PATH = "/v2/updates/price/stream"
LATEST_PATH = "/v2/updates/price/latest"
#: What Hermes says just before it ends a stream that has been open for 24 h.
CONNECTION_TIMEOUT_MESSAGE = "Connection timeout reached (24h)"
#: The start of Hermes's 404 body when it does not know some of the ids asked for.
PRICE_IDS_NOT_FOUND = "Price ids not found:"
ApiKeyPlacement = Literal["bearer", "header", "query"]


def _feed_id_tuple(feed_ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(normalize_feed_id(feed_id) for feed_id in feed_ids))


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class HermesConfig:
    """How to reach Hermes and how patiently to retry.

    The API key goes where the provider expects it: ``bearer`` sends
    ``Authorization: Bearer <key>`` (Pyth's hosted Hermes), ``header`` sends
    ``<api_key_name>: <key>``, ``query`` appends ``<api_key_name>=<key>`` to
    every URL. Providers that put a token in the URL path need no key: give
    the full ``base_url`` instead. The key is kept out of ``repr``.
    """

    feed_ids: tuple[str, ...] = attrs.field(converter=_feed_id_tuple)
    base_url: str = DEFAULT_HERMES_URL
    api_key: str | None = attrs.field(default=None, repr=False)
    api_key_placement: ApiKeyPlacement = attrs.field(
        default="bearer", validator=attrs.validators.in_(("bearer", "header", "query"))
    )
    api_key_name: str = "x-api-key"
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    read_timeout: float = attrs.field(default=30.0, validator=_positive)
    price_timeout: float = attrs.field(default=10.0, validator=_positive)
    backoff_initial: float = attrs.field(default=0.5, validator=_positive)
    backoff_max: float = attrs.field(default=30.0, validator=_positive)
    backoff_multiplier: float = 2.0
    backoff_jitter: float = 0.2
    rate_limited_wait: float = attrs.field(default=60.0, validator=_positive)
    requests_per_minute: float = attrs.field(default=30.0, validator=_positive)
    request_burst: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    rng_seed: int | None = None
    allow_unordered: bool = False
    benchmarks_only: bool = False

    @feed_ids.validator
    def _check_feed_ids(self, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
        if not value:
            raise ValueError("HermesConfig needs at least one feed id")

    def __attrs_post_init__(self) -> None:
        self.new_backoff()  # reject bad backoff settings now, not at the first reconnect

    def new_backoff(self) -> Backoff:
        return Backoff(
            initial=self.backoff_initial,
            maximum=self.backoff_max,
            multiplier=self.backoff_multiplier,
            jitter=self.backoff_jitter,
            rng=random.Random(self.rng_seed),
        )

    def new_budget(self, now: float) -> RequestBudget:
        return RequestBudget(per_minute=self.requests_per_minute, burst=self.request_burst, now=now)


@attrs.frozen
class _SessionEnd:
    """Why one connection ended, and what that means for the next attempt."""

    healthy: bool  # it delivered at least one well-formed payload
    reason: str
    retry_after: float | None = None  # a floor on the next delay the server asked for
    routine: bool = False  # the server's announced 24 h close: nothing went wrong


class HermesFeed:
    """A ``PriceFeed`` reading Pyth prices from Hermes, reconnecting forever.

    ``run`` calls ``task_status.started()`` after the first stream connection
    is established and its gap fill from ``/latest`` has been delivered, so a
    caller starting it with ``nursery.start`` waits until Hermes is reachable.
    ``transport`` replaces httpx's network transport (tests use
    ``httpx.MockTransport``); ``wall_clock`` returns epoch seconds for
    ``FeedStatus.last_update_wall`` and for ``Retry-After`` dates.
    """

    source = HERMES_SOURCE

    def __init__(
        self,
        config: HermesConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._feed_ids = frozenset(config.feed_ids)
        self._wall_clock = wall_clock
        self._transport = transport
        self._filter = OracleOrderFilter()
        self._status = FeedStatusRecorder(HERMES_SOURCE)
        self._unknown_seen: set[str] = set()
        self._server_retry: float | None = None
        self._refused_ids: frozenset[str] = frozenset()  # named by a 404: left out of requests
        self._unserved: frozenset[str] = frozenset()  # left out of Hermes's last full answer

    def status(self) -> FeedStatus:
        return self._status.snapshot()

    async def run(
        self,
        on_update: OnUpdate,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        backoff = self._config.new_backoff()
        budget = self._config.new_budget(trio.current_time())
        started = False

        def connected() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        async with self._http_client() as client:
            while True:
                end = await self._session(client, budget, on_update, connected)
                self._status.disconnected(end.reason)
                if end.healthy:
                    backoff.reset()
                    self._refused_ids = frozenset()  # ask for them again: they may be listed by now
                delay = max(backoff.next_delay(), end.retry_after or 0.0, self._server_retry or 0.0)
                logger.log(
                    logging.INFO if end.routine else logging.WARNING,
                    "Hermes stream ended (%s); reconnecting in %.2f s",
                    end.reason,
                    delay,
                )
                await trio.sleep(delay)
                self._status.reconnecting()

    def _http_client(self) -> httpx.AsyncClient:
        config = self._config
        headers = {"User-Agent": "perpstream"}
        if config.api_key is not None and config.api_key_placement == "bearer":
            headers["Authorization"] = f"Bearer {config.api_key}"
        elif config.api_key is not None and config.api_key_placement == "header":
            headers[config.api_key_name] = config.api_key
        return httpx.AsyncClient(
            base_url=config.base_url,
            headers=headers,
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            transport=self._transport,
        )

    def _requested_ids(self) -> tuple[str, ...]:
        """The configured feeds less those Hermes refused by name; all of them if it refused all."""
        wanted = tuple(feed_id for feed_id in self._config.feed_ids if feed_id not in self._refused_ids)
        return wanted or self._config.feed_ids

    def _params(self, *, stream: bool) -> httpx.QueryParams:
        config = self._config
        params = [("ids[]", feed_id) for feed_id in self._requested_ids()]
        params += [("parsed", "true"), ("encoding", "hex"), ("ignore_invalid_price_ids", "true")]
        if stream:
            params += [
                ("allow_unordered", _flag(config.allow_unordered)),
                ("benchmarks_only", _flag(config.benchmarks_only)),
            ]
        if config.api_key is not None and config.api_key_placement == "query":
            params.append((config.api_key_name, config.api_key))
        return httpx.QueryParams(tuple(params))

    async def _spend(self, budget: RequestBudget) -> None:
        """Wait until the request budget allows one more request, and take it."""
        wait = budget.take(trio.current_time())
        if wait > 0:
            logger.debug("Hermes request budget spent; next request in %.2f s", wait)
            await trio.sleep(wait)

    async def _session(
        self,
        client: httpx.AsyncClient,
        budget: RequestBudget,
        on_update: OnUpdate,
        connected: Callable[[], None],
    ) -> _SessionEnd:
        """One connection, from request to its end, however it ends.

        Only the I/O steps are guarded, so an exception raised by
        ``on_update`` is never mistaken for a network failure.
        """
        await self._spend(budget)
        response = await self._open_stream(client)
        if isinstance(response, _SessionEnd):
            return response
        try:
            self._status.connected()
            logger.info("Hermes stream connected to %s", self._config.base_url)
            await self._fill_gap(client, budget, on_update)
            connected()
            return await self._read_stream(response, on_update)
        finally:
            await response.aclose()

    async def _open_stream(self, client: httpx.AsyncClient) -> httpx.Response | _SessionEnd:
        """The stream's response, open and answering 200, or why there is none."""
        request = client.build_request(
            "GET", STREAM_PATH, params=self._params(stream=True), headers={"Accept": "text/event-stream"}
        )
        with trio.move_on_after(self._config.connect_timeout + self._config.read_timeout):
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                return _SessionEnd(False, f"{type(exc).__name__}: {exc}")
            if response.status_code == 200:
                return response
            try:
                body = await _body_text(response)
            finally:
                await response.aclose()
            return self._refused(response, body)
        return _SessionEnd(False, "no response to the stream request")

    def _refused(self, response: httpx.Response, body: str) -> _SessionEnd:
        """What a non-200 answer to the stream request means for the next attempt."""
        reason = f"HTTP {response.status_code}" + (f": {body[:200]}" if body else "")
        retry_after = _retry_after(response, self._wall_clock())
        if response.status_code == 429 and retry_after is None:
            retry_after = self._config.rate_limited_wait
        if response.status_code == 404 and body.startswith(PRICE_IDS_NOT_FOUND):
            # A Hermes that ignores ignore_invalid_price_ids: leave the named ids out.
            refused = _named_ids(body[len(PRICE_IDS_NOT_FOUND) :]) & self._feed_ids
            if refused:
                self._refused_ids |= refused
                self._note_unserved(self._unserved | refused)
        return _SessionEnd(False, reason, retry_after)

    async def _read_stream(self, response: httpx.Response, on_update: OnUpdate) -> _SessionEnd:
        """Deliver the stream's updates until it ends, fails, falls silent or brings no prices.

        The end counts as healthy if the stream delivered at least one
        well-formed payload first, however the stream then ended.
        """
        config = self._config
        healthy = False
        closing: str | None = None  # an error event that announced the end of the body
        parser = SSEParser()
        price_deadline = trio.current_time() + config.price_timeout
        # httpx implements aiter_bytes as an async generator; closing it explicitly
        # keeps its cleanup inside this task rather than in a finalizer.
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        async with aclosing(chunks):
            while True:
                with trio.move_on_at(min(trio.current_time() + config.read_timeout, price_deadline)) as idle:
                    try:
                        chunk = await anext(chunks, None)
                    except httpx.HTTPError as exc:
                        return _SessionEnd(healthy, f"{type(exc).__name__}: {exc}")
                if idle.cancelled_caught:
                    if trio.current_time() >= price_deadline:
                        return _SessionEnd(healthy, f"no price for {config.price_timeout} s while connected")
                    return _SessionEnd(healthy, f"no data for {config.read_timeout} s")
                if chunk is None:
                    if closing == CONNECTION_TIMEOUT_MESSAGE:
                        return _SessionEnd(True, f"server closed the stream: {closing}", routine=True)
                    return _SessionEnd(healthy, "server closed the stream" + (f": {closing}" if closing else ""))
                try:
                    events = parser.feed(chunk)
                except SSEProtocolError as exc:
                    return _SessionEnd(healthy, f"SSEProtocolError: {exc}")
                if parser.retry_ms is not None:
                    self._server_retry = parser.retry_ms / 1000
                for event in events:
                    if event.event == "error":
                        closing = self._error_event(event.data)
                        continue
                    if event.event != "message":
                        logger.debug("ignoring Hermes event of type %r", event.event)
                        continue
                    try:
                        batch = decode_hermes_payload(event.data, self._feed_ids)
                    except HermesPayloadError as exc:
                        logger.warning("skipping malformed Hermes event: %s", exc)
                        self._status.error(f"malformed event: {exc}")
                        continue
                    healthy = True
                    if batch.updates:
                        price_deadline = trio.current_time() + config.price_timeout
                    await self._deliver(batch, on_update, complete=not config.benchmarks_only)

    def _error_event(self, message: str) -> str:
        """Log an ``event:error``; returns its message, in case the body ends after it."""
        if message == CONNECTION_TIMEOUT_MESSAGE:
            logger.info("Hermes is closing the stream after its 24 h limit")
        else:
            logger.warning("Hermes sent an error event (the stream goes on): %s", message[:200])
            self._status.error(f"error event: {message[:200]}")
        return message

    async def _fill_gap(self, client: httpx.AsyncClient, budget: RequestBudget, on_update: OnUpdate) -> None:
        """Deliver the latest prices, to cover what happened while disconnected.

        A failed gap fill is logged but does not drop the stream that just
        opened: the stream itself brings every feed's next price within a
        slot. For the same reason it is skipped, not waited for, when the
        request budget is spent.
        """
        if not budget.available(trio.current_time()):
            logger.debug("Hermes gap fill skipped: the request budget is spent")
            return
        budget.take(trio.current_time())
        latest = await self._fetch_latest(client)
        if isinstance(latest, str):
            logger.warning("Hermes gap fill from %s failed: %s", LATEST_PATH, latest)
            self._status.error(f"gap fill failed: {latest}")
            return
        await self._deliver(latest, on_update, complete=True)

    async def _fetch_latest(self, client: httpx.AsyncClient) -> HermesBatch | str:
        """The latest prices, or why they could not be had."""
        with trio.move_on_after(self._config.connect_timeout + self._config.read_timeout):
            try:
                response = await client.get(LATEST_PATH, params=self._params(stream=False))
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            try:
                return decode_hermes_payload(response.content, self._feed_ids)
            except HermesPayloadError as exc:
                return str(exc)
        return "no response"

    async def _deliver(self, batch: HermesBatch, on_update: OnUpdate, *, complete: bool) -> None:
        """Pass on the batch's new prices; ``complete``: it should hold every requested feed."""
        for error in batch.malformed:
            logger.warning("skipping malformed Hermes entry: %s", error)
        if batch.binary_error is not None:
            logger.warning("Hermes prices without signed update data: %s", batch.binary_error)
        for feed_id in batch.unknown_feed_ids:
            if feed_id not in self._unknown_seen:
                self._unknown_seen.add(feed_id)
                logger.warning("ignoring updates for unconfigured feed %s", feed_id)
        if complete and not batch.malformed:
            served = {update.feed_id for update in batch.updates}
            self._note_unserved(self._feed_ids - served)
        for update in batch.updates:
            if self._filter.accept(update):
                self._status.delivered(update, self._wall_clock())
                await on_update(update)

    def _note_unserved(self, unserved: Collection[str]) -> None:
        """Record which feeds Hermes does not serve; log only the changes."""
        unserved = frozenset(unserved)
        if unserved == self._unserved:
            return
        gone, back = sorted(unserved - self._unserved), sorted(self._unserved - unserved)
        if gone:
            logger.warning(
                "Hermes does not serve feed(s) %s (unknown or delisted); the other feeds carry on", ", ".join(gone)
            )
        if back:
            logger.info("Hermes serves feed(s) %s again", ", ".join(back))
        self._unserved = unserved
        self._status.missing(tuple(feed_id for feed_id in self._config.feed_ids if feed_id in unserved))


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _named_ids(text: str) -> frozenset[str]:
    """The feed ids listed in a ``Price ids not found: a, b`` body; unreadable ones are skipped."""
    named: set[str] = set()
    for word in text.split(","):
        try:
            named.add(normalize_feed_id(word))
        except ValueError:
            continue
    return frozenset(named)


async def _body_text(response: httpx.Response) -> str:
    try:
        return (await response.aread()).decode("utf-8", errors="replace").strip()
    except httpx.HTTPError:
        return ""


def _retry_after(response: httpx.Response, now: float) -> float | None:
    """``Retry-After`` in seconds, given as seconds or as an HTTP date; None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    if not value:
        return None
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None
