"""What one market has told its clients of the chain, in the chain's own terms.

In one process a delivery's outbox ``seq`` says whether its messages were
published (the history file keeps the newest per market): the seqs belong
to the data file that delivers them again after a restart. Cores sharing a
bus have data files of their own — a core that takes over may index the
chain from the start — so there the published point is kept in terms any
core's index agrees on:

- ``final_through``: the newest event (block, log index) whose ``final``
  copy was published. Final copies come in chain order and are never
  undone, so every delivery at or below it was told (its pending copy
  came before its final one).
- ``pending``: the events above it published ``pending``, by identity
  (transaction, log index, block hash): a few blocks' worth, those not yet
  ``confirmations`` deep.

A ``reverted`` delivery was told unless its event is still pending here:
it is news only to clients that saw the event pending.
"""

from __future__ import annotations

import json

import attrs

from perpstream.chain.events import EventMeta, IndexedEvent

__all__ = ["ChainPublished"]

_NOTHING_FINAL = (-1, -1)


def _identity(meta: EventMeta) -> str:
    return f"{meta.tx_hash}:{meta.log_index}:{meta.block_hash}"


@attrs.define
class ChainPublished:
    """One market's published point in chain terms (see the module docstring)."""

    final_through: tuple[int, int] = _NOTHING_FINAL
    pending: dict[str, tuple[int, int]] = attrs.field(factory=dict)

    def told(self, indexed: IndexedEvent) -> bool:
        """Whether the messages of ``indexed`` were published already (by any core)."""
        meta = indexed.event.meta
        if indexed.finality == "reverted":
            return _identity(meta) not in self.pending
        if meta.order <= self.final_through:
            return True
        return indexed.finality == "pending" and _identity(meta) in self.pending

    def mark(self, indexed: IndexedEvent) -> bool:
        """The messages of ``indexed`` are published; whether that moved the point (a told one does not)."""
        meta = indexed.event.meta
        if indexed.finality == "pending":
            if meta.order <= self.final_through or _identity(meta) in self.pending:
                return False
            self.pending[_identity(meta)] = meta.order
        elif indexed.finality == "reverted":
            return self.pending.pop(_identity(meta), None) is not None
        elif meta.order > self.final_through:
            self.final_through = meta.order
            self.pending = {key: order for key, order in self.pending.items() if order > meta.order}
        else:
            return False
        return True

    def to_json(self) -> str:
        return json.dumps({"final_through": list(self.final_through),
                           "pending": {key: list(order) for key, order in self.pending.items()}})

    @classmethod
    def from_json(cls, text: str | bytes) -> ChainPublished:
        data = json.loads(text)
        block, log_index = data["final_through"]
        return cls((int(block), int(log_index)),
                   {key: (int(b), int(i)) for key, (b, i) in data["pending"].items()})
