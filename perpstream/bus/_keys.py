"""The bus's Redis keys, in one place (a prefix keeps several deployments apart on one server).

``{p}:epoch``
    The epoch of every stream's history on this bus.
``{p}:reserved``
    Offsets handed out so far are at most this (reserved a block at a time).
``{p}:forgotten``
    The newest offset of an event of a stream that was forgotten (idle and empty).
``{p}:ev:{stream}``
    A Redis Stream of the stream's kept events; entry id ``{offset}-0``,
    fields ``t`` (type), ``ts``, ``at`` (when kept, epoch ms), ``b`` (the frame body).
``{p}:snap:{stream}``
    A Redis Stream of the stream's newest snapshot (``MAXLEN 1``): same fields.
``{p}:published``
    A hash: per market, what it has told clients of the chain
    (:class:`~perpstream.history.ChainPublished` as JSON), so that a core
    taking over does not tell them again.
``{p}:open:{market}``
    The market's open positions, as the active core last priced them (JSON, with a TTL).
``{p}:interest:{address}``
    An edge has subscribers to ``positions:{address}`` (a key with a TTL, refreshed).
``{p}:lease``
    The active core's id (a key with a TTL, renewed by that core).
"""

from __future__ import annotations

import attrs

__all__ = ["BusKeys"]


@attrs.frozen
class BusKeys:
    prefix: str = "perpstream"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def reserved(self) -> str:
        return f"{self.prefix}:reserved"

    @property
    def forgotten(self) -> str:
        return f"{self.prefix}:forgotten"

    @property
    def published(self) -> str:
        return f"{self.prefix}:published"

    @property
    def lease(self) -> str:
        return f"{self.prefix}:lease"

    def events(self, stream: str) -> str:
        return f"{self.prefix}:ev:{stream}"

    def snapshot(self, stream: str) -> str:
        return f"{self.prefix}:snap:{stream}"

    def open_positions(self, market_id: str) -> str:
        return f"{self.prefix}:open:{market_id}"

    def interest(self, address: str) -> str:
        return f"{self.prefix}:interest:{address}"

    @property
    def interest_pattern(self) -> str:
        return f"{self.prefix}:interest:*"

    @property
    def events_pattern(self) -> str:
        return f"{self.prefix}:ev:*"

    def stream_of_events_key(self, key: str) -> str:
        return key.removeprefix(f"{self.prefix}:ev:")
