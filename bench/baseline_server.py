"""The in-run baseline of bench/fanout.py: a bare quart-trio broadcast server.

The least a quart-trio + hypercorn server must do to serve perpstream's
price stream: one WebSocket route on the same path, a ``connected`` message,
then one broadcaster task that encodes the message once per tick (fresh
``ts``) and hands it to every connection's one-slot channel; each handler
renders it with its own ``seq`` and sends it. A client that has not taken
the previous message skips this one, as perpstream's conflation would. No
actors, no topics, no guard: whatever perpstream costs above this is the
price of its own machinery.

Run it the standard way, under hypercorn's trio worker::

    BASELINE_BODY='"type":"price_update",...}' BASELINE_HZ=1 \\
        hypercorn --worker-class trio --bind 127.0.0.1:8100 baseline_server:app

``BASELINE_BODY`` is a JSON object's text after its opening brace, without
``seq`` (what perpstream's ``Frame`` holds); bench/fanout.py copies it from a
message the daemon sent, so both servers send the same bytes.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import trio
from quart import websocket
from quart_trio import QuartTrio

app = QuartTrio(__name__)

_TEMPLATE: dict[str, Any] = json.loads("{" + os.environ["BASELINE_BODY"])
_PERIOD = 1 / float(os.environ.get("BASELINE_HZ", "1"))
_outboxes: set[trio.MemorySendChannel[str]] = set()


def _encode() -> str:
    """The message of this tick, encoded once for every client (body after ``{``)."""
    _TEMPLATE["ts"] = int(time.time() * 1000)
    return json.dumps(_TEMPLATE, separators=(",", ":"))[1:]


async def _broadcast() -> None:
    next_tick = trio.current_time()
    while True:
        next_tick += _PERIOD
        await trio.sleep_until(next_tick)
        body = _encode()
        for outbox in list(_outboxes):
            try:
                outbox.send_nowait(body)
            except trio.WouldBlock:
                pass  # still sending the previous one: this client skips a tick


@app.before_serving
async def _start_broadcaster() -> None:
    app.nursery.start_soon(_broadcast)


@app.websocket("/api/v1/ws/prices/<market_id>")
async def prices(market_id: str) -> None:
    outbox, inbox = trio.open_memory_channel[str](1)
    await websocket.accept()
    connected = {"type": "connected", "channel": "prices", "market_id": market_id,
                 "ts": int(time.time() * 1000)}
    await websocket.send(json.dumps({"seq": 1, **connected}, separators=(",", ":")))
    seq = 1
    _outboxes.add(outbox)
    try:
        async for body in inbox:
            seq += 1
            await websocket.send(f'{{"seq":{seq},{body}')
    finally:
        _outboxes.discard(outbox)
