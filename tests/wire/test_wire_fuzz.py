"""Property-based fuzzing of the first packets a client sends, against the real daemon.

Each example starts from a well-formed opening (a WebSocket upgrade, an
HTTP request, an upgrade followed by a frame) or from nothing, mangles it
(truncation, inserted, overwritten or appended random bytes), splits it
into one to three writes and maybe ends with a reset. Whatever the bytes,
the server's answer must be well-formed: nothing, an HTTP/1.1 response
with a status from the expected set (never a 5xx but 501), or HTTP/2. The
module's ``unharmed`` check then holds for the whole run (the control
client kept receiving, nothing logged at error level, no contained
failure). Short in ``make test`` (derandomized, so reproducible); the long
variant, with fresh random examples, runs with ``--run-slow``.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.clients import Listener
from tests.reliability.daemon_process import DaemonProcess
from tests.wire.conftest import problems_logged
from tests.wire.exchange import Reply, client_frame, exchange, upgrade

pytestmark = pytest.mark.e2e

SEEDS = [
    b"",
    upgrade(),
    upgrade("/api/v1/ws"),
    upgrade("/api/v1/ws") + client_frame(0x1, b'{"op":"subscribe","channel":"prices","market_id":"btc-usdc-perp"}'),
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /api/v1/markets HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
]
#: Statuses a mangled request may get: served, refused, or not implemented; never an internal error.
ANSWERS = {101, 200, 400, 403, 404, 405, 413, 414, 415, 426, 431, 501, 505}


@st.composite
def first_packets(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        mangle = draw(st.sampled_from(["truncate", "insert", "overwrite", "append"]))
        junk = draw(st.binary(min_size=1, max_size=64))
        if mangle == "truncate":
            del data[at:]
        elif mangle == "insert":
            data[at:at] = junk
        elif mangle == "overwrite":
            data[at:at + len(junk)] = junk
        else:
            data += junk
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=2)))
    bounds = [0, *cuts, len(data)]
    chunks = [bytes(data[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a] or [b""]
    return chunks, draw(st.booleans())


def well_formed(reply: Reply) -> bool:
    if not reply.data:
        return True
    if reply.data.startswith(b"HTTP/1.1 "):
        return reply.status in ANSWERS
    return len(reply.data) >= 9 and reply.data[3] == 0x04  # HTTP/2: the server's SETTINGS first


def fuzz(daemon: DaemonProcess, examples: int, derandomize: bool) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(first_packets())
    def the_answer_is_well_formed(packets: tuple[list[bytes], bool]) -> None:
        chunks, reset = packets
        logged = len(daemon.log_entries())
        reply = exchange(daemon.port, chunks, reset=reset, quiet=0.2, total=3.0)
        assert well_formed(reply), reply.data[:200]
        # A failure logged after this example's connection is gone is caught by the next one, or by `unharmed`.
        assert not problems_logged(daemon, logged)

    the_answer_is_well_formed()


async def test_fuzz_the_first_packets(daemon: DaemonProcess, unharmed: Listener) -> None:
    await trio.to_thread.run_sync(fuzz, daemon, 40, True)


@pytest.mark.slow
async def test_fuzz_the_first_packets_long(daemon: DaemonProcess, unharmed: Listener) -> None:
    await trio.to_thread.run_sync(fuzz, daemon, 2000, False)
