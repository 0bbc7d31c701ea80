"""Property-based fuzzing of everything a client can send: frames and path parameters.

Three layers, each on trio's virtual clock or with no I/O at all:

- a connection fed random sequences of frames (random JSON, random text and
  bytes, near-miss requests, oversized and deeply nested frames): every frame
  gets exactly one answer, in order; malformed ones get a malformed-class
  error and the third closes 1008; nothing else closes except a subscription
  past the limit (4429); the connection never fails;
- the stream-parameter parsers: anything is either a valid stream key, in
  canonical form, or refused with the documented code and close code;
- the app's stream paths with random segments: connected, or an error then
  a 4400/4404 close, never an internal error.

The frames include what once broke a connection: integers past Python's
4,300-digit parsing limit, and ``None``, which is what quart hands the app
for an empty binary frame.
"""

from __future__ import annotations

import json
from typing import Any

import hypothesis.strategies as st
import trio
import trio.testing
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, example, given, settings
from quart.testing.connections import WebsocketDisconnectError

import actors
from perpstream.clock import WallClock
from perpstream.protocol import Channel
from perpstream.streams import BadStreamParameter, StreamKey, parse_address
from perpstream.web import AppContext, Metrics, create_app
from perpstream.web.connection import Connection
from tests.integration.harness import BTC, service_config
from tests.web.test_connection import FakeSocket

MAX_FRAME = 65_536
MAX_MALFORMED = 3
MAX_SUBSCRIPTIONS = 3
ADDRESS = to_checksum_address("0x52908400098527886e0f7030069857d2e4169ee7")

MALFORMED_CODES = {"binary_frame", "frame_too_large", "malformed_json", "malformed_message"}
ANSWERED_CODES = {"unknown_op", "unsupported_op", "missing_channel", "unknown_channel", "missing_parameter",
                  "invalid_address", "unknown_market", "already_subscribed", "not_subscribed",
                  "too_many_subscriptions", "unavailable"}
REPLIES = {"error", "pong", "subscribed", "unsubscribed"}

def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------- strategies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
market_ids = st.sampled_from([BTC, BTC.upper(), "Btc-Usdc-Perp", "doge-usdc-perp", "", " btc-usdc-perp"]) | \
    st.text(max_size=40)
addresses = st.sampled_from([ADDRESS, ADDRESS.lower(), ADDRESS[2:].upper(), ADDRESS.swapcase(), "0x1234"]) | \
    st.text(alphabet="0123456789abcdefABCDEFxX", min_size=38, max_size=44) | st.text(max_size=50)
request_ids = st.none() | st.integers(-(2**63), 2**63) | st.text(max_size=10) | st.booleans() | st.floats() | \
    st.lists(st.integers(), max_size=2)
requests = st.fixed_dictionaries(
    {"op": st.sampled_from(["ping", "subscribe", "unsubscribe"]) | st.text(max_size=10) | st.none() | st.integers()},
    optional={
        "channel": st.sampled_from([c.value for c in Channel] + ["PRICES", "market-stats"]) | st.text(max_size=12)
        | st.integers(),
        "market_id": market_ids | json_values,
        "user_address": addresses | json_values,
        "id": request_ids,
        "extra": json_values,
    },
)
frames = st.one_of(
    requests.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=300),
    st.binary(max_size=100),
    st.integers(1, 5000).map(lambda extra: "x" * (MAX_FRAME + extra)),
    st.integers(1, 5000).map(lambda extra: "\u00e9" * (MAX_FRAME // 2 + extra)),  # over the limit in bytes only
    st.integers(1, 20_000).map(lambda depth: "[" * depth),  # deeper than the recursion limit, at the top
    st.integers(4301, 6000).map(lambda digits: '{"op": "ping", "id": ' + "9" * digits + "}"),
    st.none(),  # an empty binary frame, as quart delivers it
)


def is_malformed(frame: str | bytes | None) -> bool:
    """docs/websocket.md's "malformed": binary, oversized, not JSON, or not a JSON object."""
    if not isinstance(frame, str) or len(frame.encode("utf-8")) > MAX_FRAME:
        return True
    try:
        return not isinstance(json.loads(frame), dict)
    except (ValueError, RecursionError):
        return True


def echoed_id(frame: str | bytes | None) -> object:
    """The id a reply must carry: the request's, if it is an int or a string."""
    if is_malformed(frame):
        return None
    assert isinstance(frame, str)
    value = json.loads(frame).get("id")
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------- a connection


async def feed(frame_list: list[str | bytes | None], *, multiplexed: bool) -> tuple[list[dict[str, Any]], Any]:
    socket = FakeSocket()
    config = service_config(ws={"max_subscriptions_per_connection": MAX_SUBSCRIPTIONS, "max_frame_bytes": MAX_FRAME,
                                "max_malformed": MAX_MALFORMED},
                            limits={"subscribe_burst": 1000})  # the subscribe rate limit is tested elsewhere
    context = AppContext(config=config, registry=actors.Registry(), clock=WallClock(), metrics=Metrics())
    connection = Connection(socket.io(), context, endpoint="fuzz", multiplexed=multiplexed)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.serve, None if multiplexed else StreamKey(Channel.PRICES, BTC))
        for frame in frame_list:
            await socket.inbox_send.send(frame)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return socket.sent, socket.closed


@fuzz(150)
@given(frame_list=st.lists(frames, max_size=25), multiplexed=st.booleans())
@example(frame_list=["[" * 20_000, '{"op": "ping", "id": 1}'], multiplexed=True)
@example(frame_list=[json.dumps({"op": "subscribe", "channel": "prices", "market_id": BTC, "id": i})
                     for i in range(5)], multiplexed=True)
def test_every_frame_gets_one_answer_and_only_the_documented_closes(
    frame_list: list[str | bytes | None], multiplexed: bool
) -> None:
    sent, closed = trio.run(lambda: feed(frame_list, multiplexed=multiplexed),
                            clock=trio.testing.MockClock(autojump_threshold=0))
    replies = [m for m in sent if m["type"] in REPLIES]
    assert len(replies) <= len(frame_list)
    malformed = 0
    for frame, reply in zip(frame_list, replies):
        assert reply.get("id") == echoed_id(frame), (frame, reply)
        if is_malformed(frame):
            malformed += 1
            assert reply["type"] == "error" and reply["code"] in MALFORMED_CODES, (frame, reply)
        else:
            assert reply["type"] != "error" or reply["code"] in ANSWERED_CODES, (frame, reply)
    if closed is None:
        assert len(replies) == len(frame_list) and malformed < MAX_MALFORMED
    else:
        assert sent[-1]["type"] == "goodbye"
        if closed[0] == 1008:
            assert malformed == MAX_MALFORMED and is_malformed(frame_list[len(replies) - 1])
        else:
            assert closed[0] == 4429 and replies[-1]["code"] == "too_many_subscriptions"
            assert sum(r["type"] == "subscribed" for r in replies) + (0 if multiplexed else 1) == MAX_SUBSCRIPTIONS
    system = [m["seq"] for m in sent if m["channel"] == "system" or not multiplexed]
    assert system == list(range(1, len(system) + 1))


# ---------------------------------------------------------------- stream parameters

REFUSALS = {("invalid_address", 4400), ("unknown_market", 4404), ("missing_parameter", 4400),
            ("unknown_channel", 4400)}


@fuzz(400)
@given(channel=st.sampled_from([c.value for c in Channel]) | st.text(max_size=15), params=requests)
def test_a_stream_key_is_canonical_or_refused_with_the_documented_codes(channel: str, params: dict[str, Any]) -> None:
    try:
        key = StreamKey.parse(channel, params, [BTC])
    except BadStreamParameter as refused:
        assert (refused.code, refused.close_code) in REFUSALS
        assert len(refused.message) < 400  # what was sent is echoed only in part
        return
    if key.channel is Channel.POSITIONS:
        given_address = params["user_address"]
        assert key.key == to_checksum_address(key.key)
        assert given_address.lower().removeprefix("0x")[-40:] == key.key[2:].lower()
    elif key.channel in (Channel.PRICES, Channel.MARKET_STATS):
        assert key.key == BTC and params["market_id"].lower() == BTC
    else:
        assert (key.channel, key.key) == (Channel.LIQUIDATIONS, None)


@fuzz(300)
@given(text=addresses)
@example(text=ADDRESS.swapcase())
def test_an_address_is_accepted_only_as_one_case_or_its_checksum(text: str) -> None:
    try:
        address = parse_address(text)
    except BadStreamParameter as refused:
        assert (refused.code, refused.close_code) == ("invalid_address", 4400)
        return
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    assert len(digits) == 40 and address == to_checksum_address("0x" + digits)
    assert digits in (digits.lower(), digits.upper(), address[2:])


# ---------------------------------------------------------------- paths, through the app

def one_segment(text: str) -> bool:
    """Text that stays one path segment: no separators, no query or fragment, no escapes, no controls."""
    return bool(text) and not any(c in "/?#%\\" or not c.isprintable() for c in text)


segments = (st.text(max_size=60) | addresses | market_ids).filter(one_segment)


async def open_path(path: str) -> tuple[list[dict[str, Any]], int | None]:
    config = service_config()
    context = AppContext(config=config, registry=actors.Registry(), clock=WallClock(), metrics=Metrics())
    received: list[dict[str, Any]] = []
    code = None
    async with create_app(context).test_client().websocket(path) as ws:
        with trio.move_on_after(1):
            try:
                while True:
                    received.append(json.loads(await ws.receive()))
            except WebsocketDisconnectError as closed:
                code = closed.args[0]
    return received, code


@fuzz(60)
@given(kind=st.sampled_from(["prices", "market-stats", "positions"]), segment=segments)
def test_a_stream_path_is_served_or_refused_with_4400_or_4404(kind: str, segment: str) -> None:
    received, code = trio.run(lambda: open_path(f"/api/v1/ws/{kind}/{segment}"),
                              clock=trio.testing.MockClock(autojump_threshold=0))
    assert received, "nothing was said"
    if code is None:  # served
        assert received[0]["type"] == "connected"
        return
    if code == 1013:  # a bare registry runs no sessions: an account's stream is unavailable, try again later
        assert kind == "positions"
        assert [(m["type"], m.get("code") or m.get("reason")) for m in received] == [
            ("error", "unavailable"), ("goodbye", "unavailable")]
        return
    [error] = received
    expected = {"positions": ("invalid_address", 4400)}.get(kind, ("unknown_market", 4404))
    assert (error["type"], error["code"], code) == ("error", *expected)
