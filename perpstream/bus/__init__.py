"""The bus between a core and its edges: Redis, through coredis.

A core (``perpstream serve --role core``) runs the actor tree and publishes
every stream's frames, already encoded, with their offsets and epoch, into
Redis (:class:`RedisRelay`), holding a lease so that only one core is
active (:class:`CoreLease`) and running the sessions of the accounts the
edges watch (:class:`InterestWatcher`). An edge (``--role edge``) serves
WebSockets from the streams its clients need (:class:`EdgeStreams`).
"""

from perpstream.bus._actors import TaskActor
from perpstream.bus._edge import EdgeStreams, StreamUnavailable
from perpstream.bus._interest import INTEREST, InterestWatcher
from perpstream.bus._keys import BusKeys
from perpstream.bus._lease import CoreLease, LeaseLost
from perpstream.bus._redis import RedisLink
from perpstream.bus._relay import RedisRelay

__all__ = [
    "INTEREST",
    "BusKeys",
    "CoreLease",
    "EdgeStreams",
    "InterestWatcher",
    "LeaseLost",
    "RedisLink",
    "RedisRelay",
    "StreamUnavailable",
    "TaskActor",
]
