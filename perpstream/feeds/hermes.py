"""Pyth prices from a Hermes server, over its v2 server-sent-events stream.

The thin I/O layer around the pure pieces: ``SSEParser`` (bytes → events),
``decode_hermes_payload`` (JSON → ``PriceUpdate``s) and ``PublishTimeFilter``
(drop repeats and stale reorderings). What this module adds is the life of a
connection:

* open ``GET /v2/updates/price/stream?ids[]=…&parsed=true``;
* once it answers 200, fill the gap since the last connection with
  ``GET /v2/updates/price/latest`` — the stream only carries what happens
  from now on — then read events until the stream ends;
* any end is followed by a reconnect: Hermes closes every stream after 24 h
  (announced by an ``event: error`` just before) and sends ``event: error``
  when a consumer lags, and networks fail. A connection that delivered prices
  resets the backoff, so the routine 24 h close is followed by a prompt
  reconnect; failures in a row back off exponentially with jitter.

A stream that stays silent longer than ``read_timeout`` is treated as dead
(Hermes sends a keep-alive comment every 15 s, so silence means a broken
path). Malformed events and entries are logged and skipped; updates for
feeds that were not asked for are ignored.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from typing import Literal, cast

import attrs
import httpx
import trio

from perpstream.domain.prices import normalize_feed_id
from perpstream.feeds.backoff import Backoff
from perpstream.feeds.feed import FeedStatus, FeedStatusRecorder, OnUpdate
from perpstream.feeds.hermes_payload import (
    HERMES_SOURCE,
    HermesBatch,
    HermesPayloadError,
    decode_hermes_payload,
)
from perpstream.feeds.ordering import PublishTimeFilter
from perpstream.feeds.sse import SSEParser, SSEProtocolError

__all__ = ["DEFAULT_HERMES_URL", "HermesConfig", "HermesFeed"]

logger = logging.getLogger("perpstream.feeds.hermes")

DEFAULT_HERMES_URL = "https://hermes.pyth.network"
STREAM_PATH = "/v2/updates/price/stream"
LATEST_PATH = "/v2/updates/price/latest"
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
    backoff_initial: float = attrs.field(default=0.5, validator=_positive)
    backoff_max: float = attrs.field(default=30.0, validator=_positive)
    backoff_multiplier: float = 2.0
    backoff_jitter: float = 0.2
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


@attrs.frozen
class _SessionEnd:
    """Why one connection ended, and what that means for the next attempt."""

    healthy: bool  # it delivered at least one well-formed payload
    reason: str
    retry_after: float | None = None  # a floor on the next delay the server asked for


class HermesFeed:
    """A ``PriceFeed`` reading Pyth prices from Hermes, reconnecting forever.

    ``run`` calls ``task_status.started()`` after the first stream connection
    is established and its gap fill from ``/latest`` has been delivered, so a
    caller starting it with ``nursery.start`` waits until Hermes is reachable.
    ``transport`` replaces httpx's network transport (tests use
    ``httpx.MockTransport``); ``wall_clock`` returns epoch seconds for
    ``FeedStatus.last_update_wall``.
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
        self._filter = PublishTimeFilter()
        self._status = FeedStatusRecorder(HERMES_SOURCE)
        self._unknown_seen: set[str] = set()
        self._server_retry: float | None = None

    def status(self) -> FeedStatus:
        return self._status.snapshot()

    async def run(
        self,
        on_update: OnUpdate,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        backoff = self._config.new_backoff()
        started = False

        def connected() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        async with self._http_client() as client:
            while True:
                end = await self._session(client, on_update, connected)
                self._status.disconnected(end.reason)
                if end.healthy:
                    backoff.reset()
                delay = max(backoff.next_delay(), end.retry_after or 0.0, self._server_retry or 0.0)
                logger.log(
                    logging.INFO if end.healthy else logging.WARNING,
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

    def _params(self, *, stream: bool) -> httpx.QueryParams:
        config = self._config
        params = [("ids[]", feed_id) for feed_id in config.feed_ids]
        params += [("parsed", "true"), ("encoding", "hex")]
        if stream:
            params += [
                ("allow_unordered", _flag(config.allow_unordered)),
                ("benchmarks_only", _flag(config.benchmarks_only)),
            ]
        if config.api_key is not None and config.api_key_placement == "query":
            params.append((config.api_key_name, config.api_key))
        return httpx.QueryParams(tuple(params))

    async def _session(
        self, client: httpx.AsyncClient, on_update: OnUpdate, connected: Callable[[], None]
    ) -> _SessionEnd:
        """One connection, from request to its end, however it ends.

        Only the I/O steps are guarded, so an exception raised by
        ``on_update`` is never mistaken for a network failure.
        """
        response = await self._open_stream(client)
        if isinstance(response, _SessionEnd):
            return response
        try:
            self._status.connected()
            logger.info("Hermes stream connected to %s", self._config.base_url)
            await self._fill_gap(client, on_update)
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
                reason, retry_after = await _refusal(response)
            finally:
                await response.aclose()
            return _SessionEnd(False, reason, retry_after)
        return _SessionEnd(False, "no response to the stream request")

    async def _read_stream(self, response: httpx.Response, on_update: OnUpdate) -> _SessionEnd:
        """Deliver the stream's updates until it ends, fails or falls silent.

        The end counts as healthy if the stream delivered at least one
        well-formed payload first, however the stream then ended.
        """
        healthy = False
        parser = SSEParser()
        # httpx implements aiter_bytes as an async generator; closing it explicitly
        # keeps its cleanup inside this task rather than in a finalizer.
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        async with aclosing(chunks):
            while True:
                with trio.move_on_after(self._config.read_timeout) as idle:
                    try:
                        chunk = await anext(chunks, None)
                    except httpx.HTTPError as exc:
                        return _SessionEnd(healthy, f"{type(exc).__name__}: {exc}")
                if idle.cancelled_caught:
                    return _SessionEnd(healthy, f"no data for {self._config.read_timeout} s")
                if chunk is None:
                    return _SessionEnd(healthy, "server closed the stream")
                try:
                    events = parser.feed(chunk)
                except SSEProtocolError as exc:
                    return _SessionEnd(healthy, f"SSEProtocolError: {exc}")
                if parser.retry_ms is not None:
                    self._server_retry = parser.retry_ms / 1000
                for event in events:
                    if event.event == "error":
                        logger.warning("Hermes sent an error event: %s", event.data)
                        return _SessionEnd(healthy, f"error event: {event.data}")
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
                    await self._deliver(batch, on_update)

    async def _fill_gap(self, client: httpx.AsyncClient, on_update: OnUpdate) -> None:
        """Deliver the latest prices, to cover what happened while disconnected.

        A failed gap fill is logged but does not drop the stream that just
        opened: the stream itself brings every feed's next price shortly.
        """
        latest = await self._fetch_latest(client)
        if isinstance(latest, str):
            logger.warning("Hermes gap fill from %s failed: %s", LATEST_PATH, latest)
            self._status.error(f"gap fill failed: {latest}")
            return
        await self._deliver(latest, on_update)

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

    async def _deliver(self, batch: HermesBatch, on_update: OnUpdate) -> None:
        for error in batch.malformed:
            logger.warning("skipping malformed Hermes entry: %s", error)
        for feed_id in batch.unknown_feed_ids:
            if feed_id not in self._unknown_seen:
                self._unknown_seen.add(feed_id)
                logger.warning("ignoring updates for unconfigured feed %s", feed_id)
        for update in batch.updates:
            if self._filter.accept(update):
                self._status.delivered(update, self._wall_clock())
                await on_update(update)


def _flag(value: bool) -> str:
    return "true" if value else "false"


async def _refusal(response: httpx.Response) -> tuple[str, float | None]:
    """What a non-200 answer says: a reason to log, and any ``Retry-After``."""
    try:
        body = (await response.aread()).decode("utf-8", errors="replace").strip()[:200]
    except httpx.HTTPError:
        body = ""
    reason = f"HTTP {response.status_code}" + (f": {body}" if body else "")
    return reason, _retry_after(response)


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (Hermes's rate limiter answers 429 with one); dates are ignored."""
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None
