"""A perpstream client in Python (trio + trio-websocket), written against the public protocol.

    python client.py [--url ws://127.0.0.1:8000] [--prices MARKET]... [--market-stats MARKET]...
                     [--positions ADDRESS]... [--liquidations] [--duration SECONDS]

``PERPSTREAM_URL`` and ``DURATION_S`` set the defaults of ``--url`` and
``--duration``. With no stream options it follows the BTC price and the
liquidation candidates. It needs only ``trio`` and ``trio-websocket``.

What a robust client does, and this one shows:

- one multiplexed connection (``/api/v1/ws``), every stream subscribed on it;
- reconnect forever with exponential backoff and full jitter, resetting once
  the server says ``connected``; stop on a close that says the request
  itself is wrong (1008, 4400, 4404) or a subscription the server refuses;
- remember each stream's last ``(epoch, offset)`` and resume from it after
  a reconnect (``since``): the server replays the events missed meanwhile
  (``recovered: true``) or says it cannot (``recovered: false``: events may
  have been missed, and the next snapshot replaces all state);
- drop a message whose ``offset`` is at or below the last one seen in the
  same epoch: it has been handled already;
- after a ``resync`` the next snapshot replaces all state;
- a ``seq`` gap means lost messages: resubscribe that stream (resuming);
- chain events arrive ``pending``, later ``final``, and after a reconnect
  possibly again: apply each once, keyed on ``(tx_hash, log_index)``;
- decimals stay exact (``Decimal`` from the wire strings, never floats);
- an application-level ping when the connection has been quiet, and a
  connection silent for two intervals is dropped and reconnected.

Each line printed is ``[stream@offset] what happened`` (``[stream]`` for the
client's own news, which has no offset); status goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, connect_websocket_url
from wsproto.utilities import LocalProtocolError

FATAL_CLOSE_CODES = {1008: "policy violation", 4400: "invalid parameter", 4404: "unknown market"}
REFUSED_CODES = {"unknown_market", "invalid_address", "unknown_channel", "missing_parameter", "missing_channel"}
SNAPSHOT_TYPES = {"price_update", "positions_update", "liquidation_alert", "market_stats"}
HEARTBEAT_S = 10.0


class Backoff:
    """Exponential backoff with full jitter: uniform in [0, min(maximum, initial * 2^attempt)]."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class EventDeduper:
    """Chain events by ``(tx_hash, log_index)``: what each new copy means to the client.

    ``see`` returns ``new`` (apply it), ``finalized`` (first ``final`` copy:
    it can no longer be undone), ``reverted`` (undo it), or ``duplicate``
    (already handled: a reconnect or a restarted session sent it again).
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.seen: OrderedDict[tuple[str, int], str] = OrderedDict()

    def see(self, message: dict[str, Any]) -> str:
        key = (message["event"]["tx_hash"], message["event"]["log_index"])
        before, now = self.seen.get(key), message["finality"]
        if now == "reverted":
            verdict = "duplicate" if before == "reverted" else "reverted"
        elif before is None or before == "reverted":
            verdict = "finalized" if now == "final" else "new"
        elif before == "pending" and now == "final":
            verdict = "finalized"
        else:
            verdict = "duplicate"
        if verdict != "duplicate":
            self.seen.pop(key, None)
            self.seen[key] = now
            while len(self.seen) > self.capacity:
                self.seen.popitem(last=False)
        return verdict


def stream_name(message: dict[str, Any]) -> str:
    """How the server names a subscription: ``prices:btc-usdc-perp``, ``liquidations``.

    The key depends on the channel: position events carry a ``market_id``
    too, but their stream is the account's.
    """
    channel = message["channel"]
    if channel == "positions":
        return f"positions:{message['user_address']}"
    if channel == "liquidations":
        return "liquidations"
    return f"{channel}:{message['market_id']}"


class Refused(Exception):
    """The server refused the request itself; retrying cannot help."""


class Client:
    """Follows a set of streams over one reconnecting multiplexed connection."""

    def __init__(self, url: str, subscriptions: list[dict[str, str]], out: Any = sys.stdout) -> None:
        self.url = url.rstrip("/") + "/api/v1/ws"
        self.subscriptions = subscriptions
        self.out = out
        self.backoff = Backoff()
        self.events = EventDeduper()
        self.seq: dict[str, int] = {}
        self.positions: dict[str, tuple[str, int]] = {}  # stream -> last (epoch, offset) received
        self.fresh: set[str] = set()  # streams whose next snapshot replaces all state
        self.by_name: dict[str, dict[str, str]] = {}
        self.requests: dict[int, dict[str, str]] = {}
        self.next_id = 1
        self.connections = 0

    # ------------------------------------------------------------ output

    def emit(self, stream: str, text: str, offset: int | None = None) -> None:
        where = stream if offset is None else f"{stream}@{offset}"
        print(f"[{where}] {text}", file=self.out, flush=True)

    @staticmethod
    def status(text: str) -> None:
        print(f"client: {text}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------ connection

    async def run(self) -> None:
        """Follow the streams until cancelled; raises :class:`Refused` when retrying cannot help."""
        while True:
            code, reason = await self._connection()
            if code in FATAL_CLOSE_CODES:
                raise Refused(f"closed {code} ({reason or FATAL_CLOSE_CODES[code]})")
            delay = self.backoff.next_delay()
            closed = f"close {code}: {reason}" if code is not None else reason
            self.status(f"disconnected ({closed}); reconnecting in {delay:.2f} s")
            await trio.sleep(delay)

    async def _connection(self) -> tuple[int | None, str]:
        """One connection, start to end: (close code, reason)."""
        self.status(f"connecting to {self.url}")
        result: tuple[int | None, str] = (None, "closed")
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(10):
                        ws = await connect_websocket_url(nursery, self.url)
                except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
                    return None, f"cannot connect: {exc!r}"
                try:
                    result = await self._session(ws)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await ws.aclose()
        except* LocalProtocolError:
            # trio-websocket (<= 0.12) fails when a server ping arrives during
            # its own close handshake; the connection is over either way.
            result = (None, "closed during the close handshake")
        except* Refused as refused:
            raise refused.exceptions[0] from None
        return result

    async def _session(self, ws: WebSocketConnection) -> tuple[int | None, str]:
        self.connections += 1
        self.seq.clear()
        self.requests.clear()
        for subscription in self.subscriptions:
            await self._subscribe(ws, subscription)
        last_heard = trio.current_time()
        try:
            while True:
                with trio.move_on_after(HEARTBEAT_S) as quiet:
                    text = await ws.get_message()
                if quiet.cancelled_caught:
                    if trio.current_time() - last_heard > 2 * HEARTBEAT_S:
                        return None, "silent for two heartbeat intervals"
                    await ws.send_message(json.dumps({"op": "ping", "id": self._id()}))
                    continue
                last_heard = trio.current_time()
                await self._handle(ws, json.loads(text, parse_float=Decimal))
        except ConnectionClosed as closed:
            reason = closed.reason
            return (None, "closed") if reason is None else (reason.code, reason.reason or "")

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    async def _subscribe(self, ws: WebSocketConnection, subscription: dict[str, str]) -> None:
        """Subscribe, resuming after the last message received on this stream, if any."""
        request_id = self._id()
        self.requests[request_id] = subscription
        request: dict[str, Any] = {"op": "subscribe", "id": request_id, **subscription}
        name = next((name for name, known in self.by_name.items() if known == subscription), None)
        if name in self.positions:
            epoch, offset = self.positions[name]
            request["since"] = {"epoch": epoch, "offset": offset}
            self.status(f"resuming {name} after offset {offset} of epoch {epoch}")
        await ws.send_message(json.dumps(request))

    def _repeat(self, name: str, message: dict[str, Any]) -> bool:
        """Whether ``message`` was handled already (offset at or below the last in its epoch); else note it.

        The server never repeats itself on one connection, but a client that
        reconnects, or resubscribes, must not apply a message twice.
        """
        offset, epoch = message.get("offset"), message.get("epoch")
        if offset is None:
            return False
        last = self.positions.get(name)
        if last is not None and last[0] == epoch and offset <= last[1]:
            return True
        self.positions[name] = (epoch, offset)
        return False

    # ------------------------------------------------------------ messages

    async def _handle(self, ws: WebSocketConnection, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "subscribed":
            self.by_name[message["subscription"]] = self.requests.pop(message["id"])
            return
        if kind in ("pong", "unsubscribed"):
            return
        if kind == "error":
            if message.get("id") in self.requests and message["code"] in REFUSED_CODES:
                raise Refused(f"subscription refused: {message['code']}: {message['message']}")
            if message.get("id") in self.requests and message["code"] == "invalid_since":
                # The server cannot use our resume position: start that stream afresh.
                subscription = self.requests.pop(message["id"])
                self.positions = {n: p for n, p in self.positions.items() if self.by_name.get(n) != subscription}
                self.status(f"cannot resume: {message['message']}; subscribing afresh")
                await self._subscribe(ws, subscription)
                return
            self.status(f"error {message['code']}: {message['message']}")
            return
        if kind == "goodbye":
            self.status(f"goodbye: {message['reason']}")
            return
        name = stream_name(message)
        if kind == "connected":
            self.backoff.reset()
            self.seq[name] = message["seq"]
            recovered = message.get("recovered")
            if recovered:
                self.emit(name, f"resumed (connection {self.connections}): the missed events follow")
                return
            self.fresh.add(name)
            if recovered is None:
                self.emit(name, f"connected (connection {self.connections})")
                return
            # Another epoch, or history trimmed: what we hold may be out of date.
            self.positions.pop(name, None)
            self.emit(name, f"connected (connection {self.connections}): could not resume, events may "
                            "have been missed; the next snapshot replaces all state")
            return
        if name not in self.seq:
            return  # a late message of a stream being resubscribed
        if message["seq"] != self.seq[name] + 1:
            self.emit(name, f"seq {self.seq[name]} -> {message['seq']}: messages lost, resubscribing")
            subscription = self.by_name[name]
            del self.seq[name]
            await ws.send_message(json.dumps({"op": "unsubscribe", "id": self._id(), **subscription}))
            await self._subscribe(ws, subscription)
            return
        self.seq[name] = message["seq"]
        if self._repeat(name, message):
            self.emit(name, f"{kind} at offset {message['offset']} seen already: skipped")
            return
        self._show(name, message)

    def _show(self, name: str, message: dict[str, Any]) -> None:
        """Apply one new message of a stream (here: print it)."""
        kind, offset = message["type"], message.get("offset")
        if kind == "resync":
            self.fresh.add(name)
            self.emit(name, f"resync ({message['reason']}): waiting for a fresh snapshot", offset)
        elif kind in SNAPSHOT_TYPES:
            fresh = name in self.fresh
            self.fresh.discard(name)
            self.emit(name, self._describe_snapshot(message) + (" [fresh snapshot]" if fresh else ""), offset)
        elif kind == "liquidation_warning":
            self.emit(name, f"WARNING {message['severity']} {message['position_id'][:10]} "
                            f"health {message['health_factor']}", offset)
        elif kind == "liquidation_event":
            self.emit(name, f"LIQUIDATION {message['kind']} {message['position_id'][:10]} "
                            f"health {message['health_factor']} reward {message['potential_reward']}", offset)
        elif kind == "funding_rate_update":
            self.emit(name, f"funding {message['previous_funding_rate']} -> {message['funding_rate']} "
                            f"({message['source']})", offset)
        elif kind.startswith("position_"):
            verdict = self.events.see(message)
            where = f"{message['event']['tx_hash'][:10]}:{message['event']['log_index']}"
            self.emit(name, f"{kind} {message['position_id'][:10]} {where} {message['finality']} -> {verdict}",
                      offset)

    @staticmethod
    def _describe_snapshot(message: dict[str, Any]) -> str:
        kind = message["type"]
        conflated = f" (+{message['conflated']} conflated)" if message.get("conflated") else ""
        if kind == "price_update":
            price = Decimal(message["price"])  # exact: the wire sends decimal strings
            stale = " STALE" if message["stale"] else ""
            return f"price {price} ±{message['confidence']}{stale}{conflated}"
        if kind == "positions_update":
            return (f"positions {len(message['positions'])} equity {message['total_equity']} "
                    f"unrealized_pnl {message['total_unrealized_pnl']}{conflated}")
        if kind == "liquidation_alert":
            return (f"candidates {len(message['candidates'])} at_risk {message['total_at_risk']} "
                    f"liquidatable {message['total_liquidatable']}{conflated}")
        return (f"open_interest_usd {message['open_interest_usd']} funding_rate {message['funding_rate']} "
                f"positions {message['open_positions']}{conflated}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("PERPSTREAM_URL", "ws://127.0.0.1:8000"))
    parser.add_argument("--prices", action="append", default=[], metavar="MARKET")
    parser.add_argument("--market-stats", action="append", default=[], metavar="MARKET")
    parser.add_argument("--positions", action="append", default=[], metavar="ADDRESS")
    parser.add_argument("--liquidations", action="store_true")
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION_S", "0")),
                        help="stop after this many seconds (0: run until Ctrl-C)")
    return parser.parse_args(argv)


def subscriptions_of(args: argparse.Namespace) -> list[dict[str, str]]:
    subscriptions = [{"channel": "prices", "market_id": m} for m in args.prices]
    subscriptions += [{"channel": "market_stats", "market_id": m} for m in args.market_stats]
    subscriptions += [{"channel": "positions", "user_address": a} for a in args.positions]
    if args.liquidations:
        subscriptions.append({"channel": "liquidations"})
    return subscriptions or [{"channel": "prices", "market_id": "btc-usdc-perp"}, {"channel": "liquidations"}]


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    client = Client(args.url, subscriptions_of(args))
    with trio.move_on_after(args.duration if args.duration > 0 else float("inf")):
        try:
            await client.run()
        except Refused as refused:
            print(f"client: {refused}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    status = 0
    try:
        status = trio.run(main, sys.argv[1:])
    except* KeyboardInterrupt:  # Ctrl-C: a normal way to stop
        pass
    sys.exit(status)
