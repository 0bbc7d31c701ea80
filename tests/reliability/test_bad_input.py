"""Bad input from clients: refused with the documented error and close code, the daemon unharmed.

One real daemon process (``perpstream serve``, the embedded demo) serves
the whole module over real sockets; each test ends by checking that it is
unharmed: still serving, every connection of the test gone, no actor
restarted, nothing logged at error level. What ``tests/e2e`` already
proves (an unknown market, a short or badly checksummed address, a 5 KB
market segment, ``{oops``/binary/``[]`` then 1008, a client that stops
reading) is not repeated here; ``docs/reliability.md`` lists both.

Limits configured here: 8 connections per client, 4 subscriptions per
connection, 3 malformed frames, 64 KiB frames (hypercorn's own limit is
4x that), pings every second (silent peers cut after 2 s), sends stuck
for 2 s cut.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from eth_utils import to_checksum_address
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from .daemon_process import DaemonProcess
from .raw_ws import BINARY, CLOSE, PING, RawClient

pytestmark = pytest.mark.e2e

MAX_CONNECTIONS = 8
MAX_SUBSCRIPTIONS = 4
ADDRESS = to_checksum_address("0x52908400098527886e0f7030069857d2e4169ee7")  # EIP-55's own test vector


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    workdir = tmp_path_factory.mktemp("bad-input")
    process = DaemonProcess(workdir, {
        "server": {"data_dir": str(workdir / "data")},
        "ws": {"send_timeout_s": 2.0, "ping_interval_s": 1.0, "max_connections_per_client": MAX_CONNECTIONS,
               "max_subscriptions_per_connection": MAX_SUBSCRIPTIONS, "max_malformed": 3},
        # Floods of subscribes and limit hits from one address are what this suite sends on purpose.
        "limits": {"subscribe_burst": 1000, "cooldown_s": 0.0},
        "sessions": {"grace_s": 0.5},
        "streams": {"prices_interval_ms": 250, "positions_interval_ms": 500, "market_stats_interval_ms": 1000,
                    "liquidations_interval_ms": 1000},
    })
    trio.run(process.start)
    try:
        yield process
    finally:
        process.ensure_stopped()


@pytest.fixture
async def unharmed(daemon: DaemonProcess) -> Any:
    """After the test: the daemon still serves, holds nothing of it, restarted nothing, logged no error."""
    logged_before = len(daemon.log_entries())
    yield
    assert daemon.process is not None and daemon.process.poll() is None, "the daemon died"
    async with httpx.AsyncClient(base_url=daemon.http) as http:
        assert (await http.get("/healthz")).status_code == 200
        with trio.fail_after(15):
            while True:
                tree = (await http.get("/debug/actors")).json()
                sessions = next(c for c in tree["root"]["children"] if c["name"] == "sessions")
                if tree["connections"]["open"] == 0 and not sessions["children"]:
                    break
                await trio.sleep(0.1)
    assert not [node["name"] for node in walk(tree["root"]) if node["restarts"] or node["state"] != "running"]
    async with open_websocket_url(daemon.ws("/api/v1/ws/prices/btc-usdc-perp")) as ws:
        assert (await receive(ws))["type"] == "connected"
        assert (await receive(ws))["type"] == "price_update"
    problems = [e for e in daemon.log_entries()[logged_before:]
                if e.get("level") in ("error", "critical", "raw") or "exception" in e]
    assert not problems, problems


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("children") or ():
        yield from walk(child)


async def receive(ws: WebSocketConnection, timeout: float = 10) -> dict[str, Any]:
    with trio.fail_after(timeout):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def refused(daemon: DaemonProcess, path: str) -> tuple[str, int]:
    """The error code and the close code a refused path gets."""
    async with open_websocket_url(daemon.ws(path)) as ws:
        error = await receive(ws)
        assert error["type"] == "error" and error["channel"] == "system"
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    return error["code"], closed.value.reason.code


CONTROL = {"error", "pong", "subscribed", "unsubscribed"}


async def replies(ws: WebSocketConnection, *requests: str) -> list[dict[str, Any]]:
    """Send the requests, then collect the answers to them (errors, pongs, acks), in order,
    until the answer to a closing ping; stream data in between is skipped.

    The server answers a connection's requests in the order it sent them, so
    the closing ping's pong comes after every other answer: waiting for it
    is exact, where waiting for a quiet spell fails on a loaded machine.
    """
    for request in requests:
        await ws.send_message(request)
    await ws.send_message(json.dumps({"op": "ping", "id": _END_OF_REPLIES}))
    answers: list[dict[str, Any]] = []
    with trio.fail_after(20):
        while True:
            message = json.loads(await ws.get_message())
            if message["type"] == "pong" and message.get("id") == _END_OF_REPLIES:
                return answers
            if message["type"] in CONTROL:
                answers.append(message)


_END_OF_REPLIES = "end-of-replies"


def subscribe(channel: str, request_id: int, **params: str) -> str:
    return json.dumps({"op": "subscribe", "channel": channel, "id": request_id, **params})


# ---------------------------------------------------------------- stream parameters


async def test_unknown_markets(daemon: DaemonProcess, unharmed: None) -> None:
    assert await refused(daemon, "/api/v1/ws/market-stats/DOGE-USDC-PERP") == ("unknown_market", 4404)
    assert await refused(daemon, "/api/v1/ws/prices/btc-usdc-perp%00") == ("unknown_market", 4404)
    async with open_websocket_url(daemon.ws("/api/v1/ws")) as ws:
        answers = await replies(ws, subscribe("prices", 1, market_id="doge-usdc-perp"),
                                subscribe("market_stats", 2, market_id=""),
                                subscribe("prices", 3, market_id="BTC-USDC-PERP"))
        errors = [(a["id"], a["code"]) for a in answers if a["type"] == "error"]
        assert errors == [(1, "unknown_market"), (2, "unknown_market")]  # answered, not closed
        assert {(a["type"], a.get("subscription")) for a in answers} >= {("subscribed", "prices:btc-usdc-perp")}
    async with httpx.AsyncClient(base_url=daemon.http) as http:
        response = await http.get("/api/v1/markets/doge-usdc-perp")
        assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_market"


async def test_malformed_and_mixed_case_addresses(daemon: DaemonProcess, unharmed: None) -> None:
    letter = max(i for i, c in enumerate(ADDRESS) if c.isalpha() and i > 1)
    flipped = ADDRESS[:letter] + ADDRESS[letter].swapcase() + ADDRESS[letter + 1:]  # a one-letter typo
    for bad in ["0x" + "g" * 40, "0x" + "a" * 39, "0x" + "a" * 41, flipped, "0x" + "\uff10" * 40,
                "0x" + "a" * 38 + " 1", ADDRESS + "00", "0x0x" + "a" * 40, "-0x" + "a" * 40]:
        assert await refused(daemon, f"/api/v1/ws/positions/{quote(bad)}") == ("invalid_address", 4400), bad
    # All-lower, all-upper, with or without 0x, or a correct checksum: one account, said the EIP-55 way.
    for good in [ADDRESS, ADDRESS.lower(), ADDRESS[2:].upper(), "0X" + ADDRESS[2:].lower()]:
        async with open_websocket_url(daemon.ws(f"/api/v1/ws/positions/{good}")) as ws:
            connected = await receive(ws)
            assert (connected["type"], connected["user_address"]) == ("connected", ADDRESS), good
    async with open_websocket_url(daemon.ws("/api/v1/ws")) as ws:
        answers = await replies(ws, subscribe("positions", 1, user_address=flipped),
                                subscribe("positions", 2), json.dumps({"op": "subscribe", "channel": 7, "id": 3}))
        assert [(a["id"], a["code"]) for a in answers] == [
            (1, "invalid_address"), (2, "missing_parameter"), (3, "missing_channel")]
    async with httpx.AsyncClient(base_url=daemon.http) as http:
        response = await http.get(f"/api/v1/positions/{flipped}")
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_address"


async def test_path_traversal_and_very_long_segments(daemon: DaemonProcess, unharmed: None) -> None:
    async with httpx.AsyncClient(base_url=daemon.http) as http:
        for path in ["/static/../../../../etc/passwd", "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
                     "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/api/v1/markets/..%2F..%2Fetc%2Fpasswd",
                     "/api/v1/positions/..%2F..%2Fetc%2Fpasswd", "/static/" + "a" * 255]:
            response = await http.get(path)
            assert response.status_code in (400, 404) and "root:" not in response.text, path[:80]
    # Raw dot segments (a browser would have resolved them) are just a bad parameter.
    assert await refused(daemon, "/api/v1/ws/prices/../../../etc/passwd") == ("unknown_market", 4404)
    assert await refused(daemon, "/api/v1/ws/positions/" + "a" * 5000) == ("invalid_address", 4400)
    assert await refused(daemon, "/api/v1/ws/prices/" + "x" * 20_000) == ("unknown_market", 4404)
    # Past the HTTP server's header limit the request is refused before the app sees it.
    with pytest.raises(ConnectionRefusedError, match="431"):
        await trio.to_thread.run_sync(RawClient.connect, daemon.port, "/api/v1/ws/prices/" + "x" * 200_000)


async def test_an_encoded_traversal_in_a_stream_parameter_is_refused_like_any_bad_parameter(
    daemon: DaemonProcess, unharmed: None
) -> None:
    assert await refused(daemon, "/api/v1/ws/prices/..%2F..%2Fetc%2Fpasswd") == ("unknown_market", 4404)
    assert await refused(daemon, "/api/v1/ws/positions/..%2F..%2Fetc%2Fpasswd") == ("invalid_address", 4400)


async def test_a_static_file_name_too_long_for_the_filesystem_is_not_found(
    daemon: DaemonProcess, unharmed: None
) -> None:
    async with httpx.AsyncClient(base_url=daemon.http) as http:
        assert (await http.get("/static/" + "a" * 256)).status_code == 404


# ---------------------------------------------------------------- frames


async def test_malformed_frames_get_errors_and_the_third_closes_1008(daemon: DaemonProcess, unharmed: None) -> None:
    # Nested past the interpreter's recursion limit: this once crashed the whole daemon (SIGSEGV).
    async with open_websocket_url(daemon.ws("/api/v1/ws")) as ws:
        answers = await replies(ws, "[" * 65_536, "{" * 30_000, '{"op": "ping", "id": 1}')
        assert [(a["type"], a.get("code")) for a in answers] == [
            ("error", "malformed_json"), ("error", "malformed_json"), ("pong", None)]
    # Valid JSON of odd shapes: answered, never counted as malformed.
    async with open_websocket_url(daemon.ws("/api/v1/ws")) as ws:
        answers = await replies(ws, '{"op": "\\ud800"}', '{"op": "ping", "id": NaN}', '{"op": null}',
                                '{"op": "ping", "id": {"nested": [1]}}', '{"op": "subscribe"}', '{"op": 1e999}')
        assert [(a["type"], a.get("code"), a.get("id")) for a in answers] == [
            ("error", "unknown_op", None), ("pong", None, None), ("error", "unknown_op", None),
            ("pong", None, None), ("error", "missing_channel", None), ("error", "unknown_op", None)]
    # Over the limit: an error each (the frame is dropped), the third closes.
    async with open_websocket_url(daemon.ws("/api/v1/ws/liquidations")) as ws:
        await receive(ws)
        for _ in range(3):
            await ws.send_message("x" * (64 * 1024 + 1))
        codes = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = await receive(ws)
                codes += [message["code"]] if message["type"] == "error" else []
        assert codes == ["frame_too_large"] * 3 and closed.value.reason.code == 1008
    # Past hypercorn's own limit (4x) the frame is never read: 1009 at once.
    async with open_websocket_url(daemon.ws("/api/v1/ws")) as ws:
        await ws.send_message("x" * (256 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.reason.code == 1009
    # Binary frames of any size count as malformed too.
    client = await trio.to_thread.run_sync(RawClient.connect, daemon.port, "/api/v1/ws")
    for payload in (b"\x00", b"\x00" * 70_000, b"\xff" * 10):
        await trio.to_thread.run_sync(client.send, BINARY, payload)
    answers = [await trio.to_thread.run_sync(client.read_json) for _ in range(4)]
    opcode, payload = await trio.to_thread.run_sync(client.read_frame)
    assert [a.get("code") or a["reason"] for a in answers] == ["binary_frame"] * 3 + ["repeated_malformed_input"]
    assert (opcode, int.from_bytes(payload[:2], "big")) == (CLOSE, 1008)
    client.close()


async def test_an_integer_too_long_to_parse_is_malformed_json(daemon: DaemonProcess, unharmed: None) -> None:
    async with open_websocket_url(daemon.ws("/api/v1/ws")) as ws:
        answers = await replies(ws, '{"op": "ping", "id": ' + "9" * 5000 + "}", '{"op": "ping"}')
        assert [(a["type"], a.get("code")) for a in answers] == [("error", "malformed_json"), ("pong", None)]


async def test_an_empty_binary_frame_is_a_binary_frame(daemon: DaemonProcess, unharmed: None) -> None:
    client = await trio.to_thread.run_sync(RawClient.connect, daemon.port, "/api/v1/ws")
    await trio.to_thread.run_sync(client.send, BINARY, b"")
    await trio.to_thread.run_sync(client.send_text, '{"op": "ping"}')
    answers = [await trio.to_thread.run_sync(client.read_json) for _ in range(2)]
    client.close()
    assert [(a["type"], a.get("code")) for a in answers] == [("error", "binary_frame"), ("pong", None)]


# ---------------------------------------------------------------- floods


async def test_subscribe_floods(daemon: DaemonProcess, unharmed: None) -> None:
    markets = ["btc-usdc-perp", "eth-usdc-perp", "sol-usdc-perp"]
    # Churn: subscribe and unsubscribe 200 times, each acknowledged, nothing left behind.
    async with open_websocket_url(daemon.ws("/api/v1/ws")) as ws:
        requests = []
        for i in range(200):
            params = {"channel": "prices", "market_id": markets[i % 3], "id": i}
            requests += [json.dumps({"op": "subscribe", **params}), json.dumps({"op": "unsubscribe", **params})]
        answers = await replies(ws, *requests)
        assert sum(a["type"] == "subscribed" for a in answers) == 200
        assert sum(a["type"] == "unsubscribed" for a in answers) == 200
        assert not [a for a in answers if a["type"] == "error"]
    # The same stream over and over: one subscription, the rest answered already_subscribed.
    async with open_websocket_url(daemon.ws("/api/v1/ws")) as ws:
        answers = await replies(ws, *[subscribe("liquidations", i) for i in range(50)])
        assert [a["type"] for a in answers].count("subscribed") == 1
        assert [a.get("code") for a in answers].count("already_subscribed") == 49
    # More streams than allowed: error, then 4429.
    async with open_websocket_url(daemon.ws("/api/v1/ws")) as ws:
        wanted = [subscribe("prices", i, market_id=m) for i, m in enumerate(markets)]
        wanted += [subscribe("liquidations", 3), subscribe("market_stats", 4, market_id="btc-usdc-perp")]
        with pytest.raises(ConnectionClosed) as closed:
            await replies(ws, *wanted)
        assert closed.value.reason.code == 4429
    # Requests sent without ever reading the answers: let go as a slow consumer.
    before = await _let_go(daemon)
    client = await trio.to_thread.run_sync(
        lambda: RawClient.connect(daemon.port, "/api/v1/ws", receive_buffer=4096))
    await trio.to_thread.run_sync(_flood, client, json.dumps({"op": "ping", "id": "x" * 60_000}), 300)
    with trio.fail_after(10):
        while await _let_go(daemon) == before:
            await trio.sleep(0.1)
    client.close()


def _flood(client: RawClient, text: str, count: int) -> None:
    """Send ``text`` up to ``count`` times, never reading, until the server cuts us off."""
    client.sock.settimeout(5)
    for _ in range(count):
        try:
            client.send_text(text)
        except OSError:
            return


async def _let_go(daemon: DaemonProcess) -> int:
    """Connections the server has cut or closed for not keeping up, so far."""
    async with httpx.AsyncClient(base_url=daemon.http) as http:
        guard = (await http.get("/debug/actors")).json()["connections"]
        metrics = (await http.get("/metrics")).text
    closes = sum(float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith("perpstream_ws_slow_consumer_closes_total"))
    return int(guard["cut_slow"] + guard["cut_idle"] + closes)


async def _connect_many(daemon: DaemonProcess, count: int, path: str) -> tuple[list[RawClient], int]:
    """Open ``count`` connections at once: those admitted (left open), and how many got 4429."""
    clients: list[RawClient] = []

    async def one() -> None:
        clients.append(await trio.to_thread.run_sync(RawClient.connect, daemon.port, path))

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    admitted, refused_count = [], 0
    for client in clients:
        first = await trio.to_thread.run_sync(client.read_json)
        if first.get("code") == "too_many_connections":
            opcode, payload = await trio.to_thread.run_sync(client.read_frame)
            assert opcode == CLOSE and int.from_bytes(payload[:2], "big") == 4429
            refused_count += 1
            client.close()
        else:
            assert first["type"] == "connected"
            admitted.append(client)
    return admitted, refused_count


async def test_a_connection_flood_from_one_client_gets_4429_past_the_limit(
    daemon: DaemonProcess, unharmed: None
) -> None:
    admitted, refused_count = await _connect_many(daemon, 50, "/api/v1/ws/liquidations")
    assert len(admitted) == MAX_CONNECTIONS and refused_count == 50 - MAX_CONNECTIONS
    # Leaving frees a slot: the next one is admitted again.
    admitted.pop().close()
    with trio.fail_after(5):
        while not (again := (await _connect_many(daemon, 1, "/api/v1/ws/liquidations"))[0]):
            await trio.sleep(0.1)
    for client in admitted + again:
        client.close()


def _first_bytes_of_handshakes(port: int, count: int) -> list[bytes]:
    """The first bytes the server sends back to ``count`` handshakes, 50 at a time (resets skipped)."""
    answers: list[bytes] = []

    def one() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(f"GET /api/v1/ws/liquidations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                             .encode())
                answers.append(sock.recv(16))
        except ConnectionResetError:
            pass  # cut as idle before it said anything: allowed

    for _ in range(count // 50):
        threads = [threading.Thread(target=one) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return answers


async def test_a_handshake_is_never_preceded_by_a_ping(tmp_path: Path) -> None:
    pinging = DaemonProcess(tmp_path, {"server": {"data_dir": str(tmp_path / "data")},
                                       "ws": {"ping_interval_s": 0.05, "max_connections_per_client": 1000}})
    try:
        await pinging.start()
        answers = await trio.to_thread.run_sync(_first_bytes_of_handshakes, pinging.port, 1000)
        # ...and the pings themselves still go out, once the handshake is done.
        client = await trio.to_thread.run_sync(RawClient.connect, pinging.port, "/api/v1/ws/liquidations")
        opcodes = []
        try:
            with trio.fail_after(5):
                while PING not in opcodes:
                    opcodes.append((await trio.to_thread.run_sync(client.read_frame))[0])
        except OSError as exc:
            raise AssertionError(f"cut ({exc!r}) before any ping came: the server sends none") from None
        finally:
            client.close()
    finally:
        pinging.ensure_stopped()
    assert len(answers) > 500
    garbled = [answer for answer in answers if not answer.startswith(b"HTTP/1.1 101")]
    assert not garbled, f"{len(garbled)} of {len(answers)}: {garbled[0]!r}"


# ---------------------------------------------------------------- clients that misbehave


async def _guard_counts(daemon: DaemonProcess) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=daemon.http) as http:
        return (await http.get("/debug/actors")).json()["connections"]  # type: ignore[no-any-return]


async def test_clients_that_never_read_or_never_answer_pings_are_cut(
    daemon: DaemonProcess, unharmed: None
) -> None:
    # Reads everything, answers nothing (no pongs): silent, cut after two ping intervals.
    before = await _guard_counts(daemon)
    deaf = await trio.to_thread.run_sync(RawClient.connect, daemon.port, "/api/v1/ws/prices/btc-usdc-perp")
    started = trio.current_time()
    with trio.fail_after(10):
        while await trio.to_thread.run_sync(deaf.drain):
            await trio.sleep(0.1)
    elapsed = trio.current_time() - started
    assert 1.5 < elapsed < 6, elapsed
    assert (await _guard_counts(daemon))["cut_idle"] > before["cut_idle"]  # cut as silent, not as slow
    deaf.close()
    # Subscribed to everything, never reads a byte and never writes one: cut as well.
    before = await _guard_counts(daemon)
    mute = await trio.to_thread.run_sync(
        lambda: RawClient.connect(daemon.port, "/api/v1/ws", receive_buffer=4096))
    for i, market in enumerate(["btc-usdc-perp", "eth-usdc-perp", "sol-usdc-perp"]):
        await trio.to_thread.run_sync(mute.send_text, subscribe("prices", i, market_id=market))
    with trio.fail_after(10):
        while (now := await _guard_counts(daemon))["cut_idle"] + now["cut_slow"] == \
                before["cut_idle"] + before["cut_slow"]:
            await trio.sleep(0.2)
    mute.close()


async def test_clients_that_vanish_without_a_close(daemon: DaemonProcess, unharmed: None) -> None:
    """An RST mid-stream, and a FIN without a close frame: the server lets go of both at once."""
    paths = [f"/api/v1/ws/positions/{ADDRESS}", "/api/v1/ws/market-stats/eth-usdc-perp"]
    for vanish in (RawClient.abort, RawClient.close):
        clients = [await trio.to_thread.run_sync(RawClient.connect, daemon.port, path) for path in paths]
        with trio.fail_after(5):
            while (await _guard_counts(daemon))["open"] < len(paths):
                await trio.sleep(0.05)
        for client in clients:
            vanish(client)
        with trio.fail_after(1):  # before any idle timer (2 s) could: noticed from the socket itself
            while (await _guard_counts(daemon))["open"]:
                await trio.sleep(0.05)


def test_the_module_daemon_was_never_restarted(daemon: DaemonProcess) -> None:
    """The daemon that took all of the above is the one that started (no crash went unnoticed)."""
    assert daemon.process is not None and daemon.process.poll() is None
    started = [e for e in daemon.log_entries() if "serving http://" in e.get("message", "")]
    assert len(started) == 1
    assert Path(f"/proc/{daemon.pid}").exists()
