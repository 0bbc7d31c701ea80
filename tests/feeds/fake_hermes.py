"""A scripted Hermes behind ``httpx.MockTransport``, for virtual-time tests.

Each stream connection plays the next script in ``streams``: ``bytes`` are
sent, a number sleeps that many seconds, ``DROP`` breaks the connection,
``HANG`` goes silent forever, and the end of the list ends the stream
cleanly. A ``Refuse`` answers with an error status instead, and ``STALL``
never answers (for ``/latest`` too). When the scripts
run out, further connections hang, so a test ends by cancelling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs
import httpx
import trio

DROP = object()
HANG = object()
STALL = object()  # as a whole stream or /latest answer: never respond at all
Step = Any  # bytes | float | DROP | HANG


@attrs.frozen
class Refuse:
    status: int
    headers: dict[str, str] = attrs.Factory(dict)
    body: str = "unavailable"


@attrs.frozen
class Seen:
    """One request as the server saw it, with the virtual time it arrived."""

    at: float
    path: str
    params: list[tuple[str, str]]
    headers: httpx.Headers


class _ScriptedBody(httpx.AsyncByteStream):
    def __init__(self, steps: Sequence[Step]) -> None:
        self._steps = steps

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for step in self._steps:
            if isinstance(step, bytes):
                yield step
            elif step is DROP:
                raise httpx.ReadError("connection reset by peer")
            elif step is HANG:
                await trio.sleep_forever()
            else:
                await trio.sleep(step)

    async def aclose(self) -> None:
        pass


class FakeHermes:
    def __init__(
        self,
        streams: Sequence[Sequence[Step] | Refuse | object],
        latest: Sequence[str | Refuse | object] | Callable[[], str] = (),
    ) -> None:
        self._streams = list(streams)
        self._latest = latest if callable(latest) else list(latest)
        self.requests: list[Seen] = []

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def seen(self, path: str) -> list[Seen]:
        return [request for request in self.requests if request.path == path]

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(
            Seen(trio.current_time(), request.url.path, list(request.url.params.multi_items()), request.headers)
        )
        if request.url.path == "/v2/updates/price/latest":
            if not callable(self._latest) and self._latest and self._latest[0] is STALL:
                self._latest.pop(0)
                await trio.sleep_forever()
            return self._answer_latest()
        if request.url.path == "/v2/updates/price/stream":
            script: Any = self._streams.pop(0) if self._streams else [HANG]
            if script is STALL:
                await trio.sleep_forever()
            if isinstance(script, Refuse):
                return httpx.Response(script.status, headers=script.headers, text=script.body)
            return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=_ScriptedBody(script))
        return httpx.Response(404, text="not found")

    def _answer_latest(self) -> httpx.Response:
        if callable(self._latest):
            body: Any = self._latest()
        elif self._latest:
            body = self._latest.pop(0)
        else:
            body = '{"binary": {"encoding": "hex", "data": []}, "parsed": []}'
        if isinstance(body, Refuse):
            return httpx.Response(body.status, headers=body.headers, text=body.body)
        return httpx.Response(200, headers={"Content-Type": "application/json"}, text=body)
