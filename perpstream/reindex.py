"""``perpstream reindex``: rebuild the chain index from the chain itself.

The way out when the indexer stopped on something it must not repair on its
own: a reorg deeper than ``chain.confirmations``, a node whose chain was
reset or replaced, a data file of another chain or of an older perpstream.
With the daemon stopped (the data directory's lock makes sure), the index
is emptied; the next ``perpstream serve`` reads the chain again from
``chain.start_block``, or from ``--from BLOCK`` (e.g. the block a contract
was deployed at again after a reset). The chain-derived streams' history
goes with it: what it says may not hold for the rebuilt index, so clients
that resume get ``recovered: false`` and a fresh snapshot (a new epoch).
"""

from __future__ import annotations

from perpstream.chain.store import IndexerStore, StoreMismatchError
from perpstream.config import Config
from perpstream.data_lock import hold_data_dir
from perpstream.sources import history_path, index_path, unlink_sqlite

__all__ = ["reindex"]


def reindex(config: Config, *, from_block: int | None) -> str:
    """Empty the index of ``config``'s data directory; returns what was done, for the operator.

    Raises :class:`~perpstream.data_lock.DataDirLocked` while a daemon runs on it.
    """
    if from_block is not None and from_block < 0:
        raise ValueError(f"--from {from_block}: expected a block number >= 0")
    path = index_path(config)
    if config.chain.source == "embedded":
        return "chain.source = \"embedded\": its index is rebuilt on every start; nothing to do"
    with hold_data_dir(path.parent):
        try:
            store = IndexerStore(path)
        except StoreMismatchError:
            unlink_sqlite(path)  # another schema: nothing in it can be kept
            store = IndexerStore(path)
        try:
            store.wipe(start_block=from_block)
        finally:
            store.close()
        unlink_sqlite(history_path(config))
    start = config.chain.start_block if from_block is None else from_block
    return f"{path}: emptied; the next start indexes the chain again from block {start}"
