"""The bus between a core and its edges: Redis, through coredis.

A core (``perpstream serve --role core``) runs the actor tree and publishes
every stream's frames, already encoded, with their offsets and epoch, into
Redis (:class:`RedisRelay`), holding a lease so that only one core is
active (:class:`CoreLease`), running the sessions of the accounts the
edges watch (:class:`InterestWatcher`) and listing every open position
(:class:`OpenPositionsPublisher`). An edge (``--role edge``) serves
WebSockets from the streams its clients need (:class:`EdgeStreams`) and
the list from what the core wrote (:class:`EdgeOpenPositions`).
"""

from perpstream.bus._actors import TaskActor
from perpstream.bus._edge import EdgeStreams, StreamUnavailable
from perpstream.bus._interest import INTEREST, InterestWatcher
from perpstream.bus._keys import BusKeys
from perpstream.bus._lease import CoreLease, LeaseLost
from perpstream.bus._open_positions import EdgeOpenPositions, OpenPositionsPublisher
from perpstream.bus._redis import RedisLink
from perpstream.bus._relay import RedisRelay

__all__ = [
    "INTEREST",
    "BusKeys",
    "CoreLease",
    "EdgeOpenPositions",
    "EdgeStreams",
    "InterestWatcher",
    "LeaseLost",
    "OpenPositionsPublisher",
    "RedisLink",
    "RedisRelay",
    "StreamUnavailable",
    "TaskActor",
]
