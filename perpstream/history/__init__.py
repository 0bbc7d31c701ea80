"""Stream history: per-stream offsets, epochs, bounded history and recovery.

Every message that belongs to a stream carries ``offset`` (strictly
increasing within the stream, the same on every connection) and ``epoch``
(which history the offset counts in). A client that reconnects with the
last pair it received gets the events it missed, then the current snapshot,
then live messages, with ``recovered: true`` on its ``connected``; when the
history cannot tell (another epoch, an offset ahead of the stream, events
trimmed away) it gets ``recovered: false`` and the snapshot. See
``docs/websocket.md``, "Resuming a stream".
"""

from perpstream.history._chain_published import ChainPublished
from perpstream.history._log import HistoryLog, Persistence, Recovery, StreamRecovery
from perpstream.history._sqlite import HISTORY_FILENAME, SqliteHistory
from perpstream.history._streams import BusRelay, StreamHistory

__all__ = [
    "HISTORY_FILENAME",
    "BusRelay",
    "ChainPublished",
    "HistoryLog",
    "Persistence",
    "Recovery",
    "SqliteHistory",
    "StreamHistory",
    "StreamRecovery",
]
