"""One real daemon per module, and the check every wire case ends with.

The daemon is ``perpstream serve`` in a process of its own (the embedded
demo, prices every 250 ms), so what a case does to it is seen from outside:
its exit, its log, its answers. While a case runs, a control client reads
a prices stream; afterwards it must still be receiving, with ``seq``
unbroken, ``/healthz`` must answer, every connection of the case must be
gone, and the log must hold no error and no contained protocol failure
(each of those would be a case the server did not handle by itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.reliability.clients import Listener
from tests.reliability.daemon_process import DaemonProcess

PRICES = "/api/v1/ws/prices/btc-usdc-perp"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    workdir: Path = tmp_path_factory.mktemp("wire")
    process = DaemonProcess(workdir, {
        "server": {"data_dir": str(workdir / "data")},
        # A ping every second, silent peers cut after 2 s, stuck sends after 2 s.
        "ws": {"send_timeout_s": 2.0, "ping_interval_s": 1.0},
        "streams": {"prices_interval_ms": 250},
    })
    trio.run(process.start)
    try:
        yield process
    finally:
        process.ensure_stopped()


def problems_logged(daemon: DaemonProcess, since: int) -> list[dict[str, Any]]:
    """Log entries since entry ``since`` that a handled bad input must never cause."""
    return [e for e in daemon.log_entries()[since:]
            if e.get("level") in ("error", "critical", "raw") or "exception" in e
            or "protocol handling failed" in str(e.get("message", ""))]


@pytest.fixture
async def unharmed(daemon: DaemonProcess, nursery: trio.Nursery) -> AsyncIterator[Listener]:
    """A control client on a prices stream during the test; afterwards, the daemon is unharmed."""
    logged_before = len(daemon.log_entries())
    control = Listener(daemon.ws(PRICES))
    await nursery.start(control.run)
    await control.next("price_update")
    yield control
    assert daemon.process is not None and daemon.process.poll() is None, "the daemon died"
    # The control client kept receiving: two more prices after the case, seq unbroken.
    await control.next("price_update", timeout=10)
    await control.next("price_update", timeout=10)
    seqs = [m["seq"] for _, m in control.frames if "seq" in m]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert control.close_code is None and "resync" not in control.types()
    async with httpx.AsyncClient(base_url=daemon.http, timeout=10) as http:
        assert (await http.get("/healthz")).status_code == 200
        with trio.fail_after(10):  # every connection of the case is gone; the control one is left
            while (await http.get("/debug/actors")).json()["connections"]["open"] != 1:
                await trio.sleep(0.05)
    assert not problems_logged(daemon, logged_before)
