"""docs/asyncapi.yaml against the running daemon, so the document cannot drift.

Every message a live in-process daemon sends while every message type is
provoked (tests/clients/capture.py) must validate against the schema of its
type, be declared on the channel it arrived on, and carry no field the
document does not declare; every stream message must carry its ``offset``
and ``epoch``. Resumed subscriptions (``?epoch=&offset=`` and ``since``) are
held to the document too: their requests, their ``connected`` with
``recovered``, the events they replay and the ``invalid_since`` refusals.
The examples in docs/websocket.md are held to the same schemas.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trio
import yaml
from trio_websocket import ConnectionClosed, WebSocketConnection
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from perpstream import protocol
from tests.clients.capture import Capture, capture_all
from tests.clients.live import connect, stormy_config
from tests.e2e.daemon import running_daemon

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs"
BASE_URI = "urn:perpstream:asyncapi"

# The message types docs/websocket.md (the public contract) names.
CONTRACT_TYPES = {
    "connected", "price_update", "positions_update", "liquidation_warning", "position_opened",
    "position_closed", "position_liquidated", "position_reverted", "liquidation_alert", "market_stats",
    "funding_rate_update", "error", "pong", "resync", "goodbye",
}
# Every type the stormy demo reliably produces within seconds. position_reverted
# needs a chain reorg, which the embedded demo never makes; the encoder's own
# output stands in for it below.
LIVE_TYPES = CONTRACT_TYPES - {"position_reverted"} | {"position_modified", "subscribed", "unsubscribed", "liquidation_event"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


class Schemas:
    """Validators for the document's message payloads, with its local ``$ref``s resolved."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT7)
        self.registry: Registry[Any] = Registry().with_resource(BASE_URI, resource)
        self.messages = document["components"]["messages"]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def payload(self, message_key: str) -> dict[str, Any]:
        return self.resolve(self.messages[message_key]["payload"])

    def validator(self, message_key: str) -> jsonschema.Draft7Validator:
        ref = self.messages[message_key]["payload"]["$ref"]
        return self.schema_validator(ref)

    def schema_validator(self, ref: str) -> jsonschema.Draft7Validator:
        """A validator for any schema of the document, by its local ``$ref``."""
        return jsonschema.Draft7Validator({"$ref": BASE_URI + ref}, registry=self.registry)

    def channel_types(self, channel: str) -> set[str]:
        """The wire ``type`` of every server message a channel declares."""
        names = set()
        for ref in self.document["channels"][channel]["messages"].values():
            key = ref["$ref"].rsplit("/", 1)[1]
            if not key.startswith("client_"):
                names.add(self.messages[key]["name"])
        return names

    def _branches(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        """A schema and everything it is composed of (allOf, anyOf, if/then)."""
        schema = self.resolve(schema)
        found = [schema]
        for keyword in ("allOf", "anyOf", "oneOf"):
            for part in schema.get(keyword, []):
                found += self._branches(part)
        for keyword in ("if", "then"):
            if keyword in schema:
                found += self._branches(schema[keyword])
        return found

    def undeclared(self, instance: object, schema: dict[str, Any], path: str = "") -> list[str]:
        """Fields in ``instance`` (at any depth) that the schema does not declare."""
        branches = self._branches(schema)
        if isinstance(instance, dict):
            declared: dict[str, list[dict[str, Any]]] = {}
            for branch in branches:
                for name, sub in branch.get("properties", {}).items():
                    declared.setdefault(name, []).append(sub)
            problems = [f"{path}.{name}" for name in instance if name not in declared]
            for name, value in instance.items():
                for sub in declared.get(name, []):
                    problems += self.undeclared(value, sub, f"{path}.{name}")
            return problems
        if isinstance(instance, list):
            problems = []
            for branch in branches:
                if "items" in branch:
                    for index, item in enumerate(instance):
                        problems += self.undeclared(item, branch["items"], f"{path}[{index}]")
            return problems
        return []

    def check(self, message: dict[str, Any]) -> None:
        """Raise if ``message`` does not match its type's schema or has undeclared fields."""
        kind = message["type"]
        assert kind in self.messages, f"{kind} is not in the document"
        self.validator(kind).validate(message)
        assert not self.undeclared(message, self.payload(kind)), (kind, self.undeclared(message, self.payload(kind)))


@pytest.fixture(scope="module")
def schemas(document: dict[str, Any]) -> Schemas:
    return Schemas(document)


def _chain_finalities(seen: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {m["finality"] for kind in ("position_opened", "position_modified") for m in seen.get(kind, [])}


def _every_live_type_and_finality(capture: Capture) -> bool:
    seen = capture.by_type()
    return LIVE_TYPES <= seen.keys() and _chain_finalities(seen) == {"pending", "final"}


async def test_every_message_the_daemon_sends_matches_the_document(tmp_path: Path, schemas: Schemas) -> None:
    capture = await capture_all(tmp_path, enough=_every_live_type_and_finality, max_seconds=60.0)
    seen = capture.by_type()
    assert LIVE_TYPES <= seen.keys(), f"never provoked: {sorted(LIVE_TYPES - seen.keys())}"
    for endpoint, message in capture.messages:
        assert message["type"] in schemas.channel_types(endpoint), (endpoint, message)
        schemas.check(message)
        # The schemas require it; said here too, so it cannot be lost in an edit of the document.
        in_stream = message["channel"] != "system" and message["type"] != "connected"
        assert ("offset" in message and "epoch" in message) == in_stream, message
    # Each chain event arrives pending and later final; both finalities validated above.
    assert _chain_finalities(seen) == {"pending", "final"}
    assert {m["reason"] for m in seen["goodbye"]} >= {
        "server_shutting_down", "slow_consumer", "repeated_malformed_input", "too_many_subscriptions"}
    assert capture.closes == {
        "/api/v1/ws/prices/doge-usdc-perp": (4404, "unknown_market"),
        "/api/v1/ws/positions/0x1234": (4400, "invalid_address"),
        "malformed": (1008, "repeated_malformed_input"),
        "too_many_subscriptions": (4429, "too_many_subscriptions"),
        "slow_consumer": (1013, "slow_consumer"),
        "shutdown": (1001, "server_shutting_down"),
    }


def test_a_reorg_message_from_the_encoder_matches_the_document(schemas: Schemas) -> None:
    """position_reverted as the daemon's own encoder writes it (no live reorg in the demo)."""
    message = protocol.PositionReverted(
        position_id="0x" + "ab" * 32, market_id="eth-usdc-perp",
        event=protocol.EventRef(block_number=41, block_hash="0x" + "01" * 32, tx_hash="0x" + "02" * 32, log_index=3),
        finality="reverted", side="short", size=Decimal("1.5"), collateral=Decimal("100"),
        entry_price=Decimal("3400.5"), reverted_type="position_opened",
    )
    frame = protocol.encode(message, channel=protocol.Channel.POSITIONS, ts=1_732_406_400_123,
                            key=("user_address", "0x181c5657165BBeA7AD1B9bCFC3D74aB348575Cec"),
                            position=(4_219, "d6f651f57366"))
    schemas.check(json.loads(frame.render(7)))


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any], schemas: Schemas, node_modules: Path) -> None:
    """Against the official AsyncAPI 3.0.0 JSON Schema (npm @asyncapi/specs, locked in examples/js)."""
    spec = json.loads((node_modules / "@asyncapi" / "specs" / "schemas" / "3.0.0.json").read_text(encoding="utf-8"))
    registry: Registry[Any] = (Resource.from_contents(spec, default_specification=DRAFT7) @ Registry()).crawl()
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
              for e in jsonschema.Draft7Validator(spec, registry=registry).iter_errors(document)]
    assert errors == []
    # Every operation and channel message reference resolves inside the document.
    for operation in document["operations"].values():
        for ref in [operation["channel"], *operation["messages"]]:
            assert schemas.resolve(ref)


def test_the_document_names_every_message_type(schemas: Schemas) -> None:
    documented = {message["name"] for key, message in schemas.messages.items() if not key.startswith("client_")}
    in_code = {cls.type for cls in _message_classes(protocol.Message)}
    assert CONTRACT_TYPES <= documented
    assert in_code == documented
    enum = set(schemas.resolve({"$ref": "#/components/schemas/MessageType"})["enum"])
    assert enum == documented


def test_every_single_stream_path_documents_the_resume_query(document: dict[str, Any], schemas: Schemas) -> None:
    for name, channel in document["channels"].items():
        bindings = channel.get("bindings")
        if name == "multiplexed":
            assert bindings is None  # it resumes with since, per subscribe
            continue
        query = schemas.resolve(bindings)["ws"]["query"]
        assert set(query["properties"]) == {"epoch", "offset"}, name
    subscribe = schemas.resolve({"$ref": "#/components/schemas/SubscribeRequest"})
    since = schemas.resolve(subscribe["properties"]["since"]["anyOf"][0])
    assert since["required"] == ["epoch", "offset"]


def _message_classes(base: type[protocol.Message]) -> list[type[protocol.Message]]:
    found: list[type[protocol.Message]] = []
    for cls in base.__subclasses__():
        if "type" in cls.__dict__:
            found.append(cls)
        found += _message_classes(cls)
    return found


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"price": 65012.34}, "a float"),
        ({"price": "6.5e4"}, "exponent notation"),
        ({"price": "1,5"}, "not a decimal"),
        ({"stale": "no"}, "not a boolean"),
        ({"seq": 0}, "seq starts at 1"),
        ({"ts": "1732406400123"}, "ts is an integer"),
        ({"channel": "positions"}, "wrong channel"),
        ({"market_id": None}, "missing stream key"),
        ({"offset": None}, "missing offset"),
        ({"epoch": None}, "missing epoch"),
        ({"offset": 0}, "offsets start at 1"),
        ({"offset": 2**53}, "offset past 2^53 - 1"),
        ({"offset": "205"}, "offset is an integer"),
        ({"epoch": ""}, "empty epoch"),
        ({"epoch": 7}, "epoch is a string"),
    ],
)
def test_the_schemas_refuse_what_the_contract_forbids(schemas: Schemas, change: dict[str, Any], why: str) -> None:
    message = {
        "seq": 2, "type": "price_update", "channel": "prices", "market_id": "btc-usdc-perp", "ts": 1732406400123,
        "offset": 205, "epoch": "0b29992ecee0", "price": "65012.34", "confidence": "9.16", "ema_price": "65000", "publish_time": 1732406400,
        "age_ms": 123, "stale": False, "source": "simulated",
    }
    schemas.check(message)
    broken = {**message, **change}
    broken = {k: v for k, v in broken.items() if v is not None}
    with pytest.raises(jsonschema.ValidationError):
        schemas.validator("price_update").validate(broken)


def test_messages_outside_a_stream_carry_no_position(schemas: Schemas) -> None:
    connected = {"seq": 1, "type": "connected", "channel": "prices", "market_id": "btc-usdc-perp", "ts": 1,
                 "protocol_version": 1, "interval_ms": 1000, "server_time": 1}
    schemas.check(connected)
    schemas.check({**connected, "recovered": False})
    for message in ({**connected, "offset": 3, "epoch": "0b29992ecee0"},
                    {"seq": 3, "type": "pong", "channel": "system", "ts": 1, "id": 1, "offset": 3, "epoch": "e"},
                    {**connected, "recovered": "yes"}):
        with pytest.raises(jsonschema.ValidationError):
            schemas.validator(message["type"]).validate(message)


def test_undeclared_fields_are_caught(schemas: Schemas) -> None:
    message = {"seq": 3, "type": "pong", "channel": "system", "ts": 1, "id": 1, "latency": 4}
    with pytest.raises(AssertionError, match="latency"):
        schemas.check(message)


def test_every_example_in_the_guide_matches_the_document(schemas: Schemas) -> None:
    guide = (DOCS / "websocket.md").read_text(encoding="utf-8")
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", guide, flags=re.DOTALL)]
    server_messages = [e for e in examples if isinstance(e, dict) and "type" in e and "seq" in e]
    for message in server_messages:
        schemas.check(message)
    shown = {m["type"] for m in server_messages}
    assert shown == {m["name"] for k, m in schemas.messages.items() if not k.startswith("client_")}


# ------------------------------------------------------------ resuming, live

RESUMABLE = {
    "liquidations": "/api/v1/ws/liquidations",
    "prices": "/api/v1/ws/prices/btc-usdc-perp",
}


async def _messages_for(ws: WebSocketConnection, seconds: float) -> list[dict[str, Any]]:
    """Everything ``ws`` receives within ``seconds`` (or until it closes)."""
    received: list[dict[str, Any]] = []
    with trio.move_on_after(seconds):
        try:
            while True:
                received.append(json.loads(await ws.get_message()))
        except ConnectionClosed:
            pass
    return received


async def _until(ws: WebSocketConnection, wanted: str, timeout: float = 15) -> list[dict[str, Any]]:
    """What ``ws`` receives up to and including the first message of type ``wanted``."""
    received: list[dict[str, Any]] = []
    with trio.fail_after(timeout):
        while not received or received[-1]["type"] != wanted:
            received.append(json.loads(await ws.get_message()))
    return received


def _check_stream(schemas: Schemas, endpoint: str, messages: list[dict[str, Any]]) -> None:
    """Every message valid on ``endpoint``; stream messages in strictly increasing offset order, one epoch."""
    for message in messages:
        assert message["type"] in schemas.channel_types(endpoint), (endpoint, message)
        schemas.check(message)
    offsets = [m["offset"] for m in messages if "offset" in m]
    assert offsets == sorted(set(offsets)), offsets
    assert len({m["epoch"] for m in messages if "epoch" in m}) <= 1


async def test_resumed_subscriptions_match_the_document(tmp_path: Path, schemas: Schemas) -> None:
    """Resume requests, ``connected`` with ``recovered``, replayed events and ``invalid_since``, live.

    A witness stays on the liquidations stream throughout; a client that
    leaves and comes back with ``?epoch=&offset=`` must get, after
    ``recovered: true``, exactly the events the witness saw after that
    offset, as first sent (``seq`` aside), and nothing at or below it.
    """
    query = schemas.schema_validator("#/components/channelBindings/resumable/ws/query")
    subscribe = schemas.validator("client_subscribe")
    async with running_daemon(stormy_config(tmp_path)) as daemon, \
            connect(daemon.ws(RESUMABLE["liquidations"])) as witness, trio.open_nursery() as nursery:
        seen: list[dict[str, Any]] = []

        async def watch() -> None:
            while True:
                seen.append(json.loads(await witness.get_message()))
        nursery.start_soon(watch)

        # Single-stream path: leave after a snapshot, come back once events were missed.
        async with connect(daemon.ws(RESUMABLE["liquidations"])) as ws:
            first = await _until(ws, "liquidation_alert")
        _check_stream(schemas, "liquidations", first)
        assert "recovered" not in first[0]  # not asked to resume
        last = first[-1]
        with trio.fail_after(20):
            while not any(m["type"] == "liquidation_event" and m["offset"] > last["offset"] for m in seen):
                await trio.sleep(0.1)
        resume = {"epoch": last["epoch"], "offset": str(last["offset"])}
        query.validate(resume)
        path = f"{RESUMABLE['liquidations']}?epoch={resume['epoch']}&offset={resume['offset']}"
        async with connect(daemon.ws(path)) as ws:
            resumed = await _messages_for(ws, 1.5)
        _check_stream(schemas, "liquidations", resumed)
        assert resumed[0]["type"] == "connected" and resumed[0]["recovered"] is True, resumed[:2]
        assert all(m["offset"] > last["offset"] for m in resumed[1:]), resumed
        got = {m["offset"]: {k: v for k, v in m.items() if k != "seq"} for m in resumed[1:]}
        newest = max(got)
        missed = [m for m in seen if m["type"] == "liquidation_event" and last["offset"] < m["offset"] <= newest]
        assert missed, "no event was missed"
        for event in missed:
            assert got.get(event["offset"]) == {k: v for k, v in event.items() if k != "seq"}, event

        # Multiplexed: since on subscribe, one that recovers and one of another epoch.
        async with connect(daemon.ws(RESUMABLE["prices"])) as ws:
            prices = await _until(ws, "price_update")
        _check_stream(schemas, "prices", prices)
        price = prices[-1]
        requests: list[dict[str, Any]] = [
            {"op": "subscribe", "channel": "prices", "market_id": "btc-usdc-perp", "id": 1,
             "since": {"epoch": price["epoch"], "offset": price["offset"]}},
            {"op": "subscribe", "channel": "liquidations", "id": 2, "since": {"epoch": "0" * 12, "offset": 5}},
            {"op": "subscribe", "channel": "market_stats", "market_id": "eth-usdc-perp", "id": 3,
             "since": {"epoch": price["epoch"], "offset": -1}},
        ]
        for request in requests[:2]:
            subscribe.validate(request)
        with pytest.raises(jsonschema.ValidationError):
            subscribe.validate(requests[2])  # the document refuses it as the server does
        async with connect(daemon.ws("/api/v1/ws")) as ws:
            for request in requests:
                await ws.send_message(json.dumps(request))
            multiplexed = await _messages_for(ws, 1.5)
        for message in multiplexed:
            assert message["type"] in schemas.channel_types("multiplexed"), message
            schemas.check(message)
        connected = {m["channel"]: m for m in multiplexed if m["type"] == "connected"}
        assert connected["prices"]["recovered"] is True and connected["liquidations"]["recovered"] is False
        assert all(m["offset"] > price["offset"] for m in multiplexed if m["channel"] == "prices" and "offset" in m)
        assert any(m["type"] == "liquidation_alert" for m in multiplexed)  # the snapshot after recovered: false
        errors = [m for m in multiplexed if m["type"] == "error"]
        assert [(e["code"], e["id"]) for e in errors] == [("invalid_since", 3)], errors
        assert errors[0]["message"].startswith("offset:") and "-1" in errors[0]["message"], errors
        assert not [m for m in multiplexed
                    if m["channel"] == "market_stats" or m["type"] == "subscribed" and m["id"] == 3]

        # A bad query on a single-stream path: error, then close 4400.
        # (The query schema can say digits, not their range: 2^53 is refused by the server alone.)
        for bad, schema_refuses, named in (({"epoch": last["epoch"]}, True, "offset"),
                                           ({"epoch": last["epoch"], "offset": "9007199254740992"}, False, "offset"),
                                           ({"epoch": "e" * 65, "offset": "1"}, True, "epoch")):
            if schema_refuses:
                with pytest.raises(jsonschema.ValidationError):
                    query.validate(bad)
            path = RESUMABLE["prices"] + "?" + "&".join(f"{k}={v}" for k, v in bad.items())
            async with connect(daemon.ws(path)) as ws:
                refused = await _messages_for(ws, 5)
                assert ws.closed is not None and ws.closed.code == 4400, ws.closed
            for message in refused:
                schemas.check(message)
            assert [m["code"] for m in refused] == ["invalid_since"], refused
            assert refused[0]["message"].startswith(f"{named}:"), refused
        nursery.cancel_scope.cancel()
