"""The wire protocol (v1): message classes and their JSON encoding.

Field names here are the public contract of ``docs/websocket.md``; add fields,
never rename them. Every decimal quantity goes out as a JSON string in plain
notation, counts and timestamps as integers.

Encoding happens once per message, not once per subscriber: :func:`encode`
turns a message into a :class:`Frame` whose body is the JSON object without
its per-subscription fields, and :meth:`Frame.render` prepends ``seq`` (and
``conflated`` when messages were skipped) for one subscription. Ten thousand
subscribers to a price stream cost one ``json.dumps`` and ten thousand short
string concatenations.
"""

from __future__ import annotations

import json
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Final

import attrs
import cattrs

from perpstream.domain import to_wire

__all__ = [
    "PROTOCOL_VERSION",
    "Channel",
    "CloseCode",
    "Frame",
    "Message",
    "Resumed",
    "encode",
    "to_data",
]

PROTOCOL_VERSION: Final = 1


class Channel(str, Enum):
    PRICES = "prices"
    POSITIONS = "positions"
    LIQUIDATIONS = "liquidations"
    MARKET_STATS = "market_stats"
    SYSTEM = "system"


class CloseCode:
    """WebSocket close codes the server uses (docs/websocket.md, "Close codes")."""

    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001
    POLICY: Final = 1008
    INTERNAL_ERROR: Final = 1011
    SLOW_CONSUMER: Final = 1013
    TRY_AGAIN_LATER: Final = 1013  # the same code, for a stream that cannot be served right now
    INVALID_PARAMETER: Final = 4400
    UNKNOWN_MARKET: Final = 4404
    TOO_MANY: Final = 4429


# ---------------------------------------------------------------- messages


@attrs.frozen(kw_only=True)
class Message:
    """Base of every server message: ``type`` and whether it may be conflated.

    ``snapshot`` messages carry a whole state, so a slow client may skip to
    the newest one; event messages must each arrive (or the client is cut
    off and told to resync).
    """

    type: ClassVar[str]
    snapshot: ClassVar[bool] = False


@attrs.frozen(kw_only=True)
class Connected(Message):
    type: ClassVar[str] = "connected"
    protocol_version: int = PROTOCOL_VERSION
    interval_ms: int
    server_time: int


@attrs.frozen(kw_only=True)
class Resumed(Connected):
    """``connected`` for a subscription that asked to resume (``since``): did it recover?"""

    recovered: bool


@attrs.frozen(kw_only=True)
class PriceUpdate(Message):
    type: ClassVar[str] = "price_update"
    snapshot: ClassVar[bool] = True
    price: Decimal
    confidence: Decimal
    ema_price: Decimal
    publish_time: int
    age_ms: int
    stale: bool
    source: str
    #: 0x-hex blobs to pass to the exchange with a liquidation (the on-chain
    #: oracle's ``updatePriceFeeds``); empty when the source has none.
    update_data: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class EventRef:
    """Where a chain event sits; clients dedupe on ``(tx_hash, log_index)``."""

    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


@attrs.frozen(kw_only=True)
class PositionView:
    """One position as the positions stream shows it."""

    position_id: str
    market_id: str
    side: str
    size: Decimal
    entry_price: Decimal
    mark_price: Decimal | None
    collateral: Decimal
    unrealized_pnl: Decimal | None
    funding_owed: Decimal | None
    equity: Decimal | None
    leverage: Decimal | None
    health_factor: Decimal | None
    liquidation_price: Decimal | None
    stale: bool = False
    #: Health at the edge of the oracle's confidence band (P − σ long, P + σ
    #: short): an early signal, not the contract's verdict.
    health_factor_conservative: Decimal | None = None
    #: The contract's verdict at ``mark_price`` (False without a fresh price).
    liquidatable: bool = False
    #: The chain event that produced this state, and whether it is final yet.
    last_event: EventRef | None = None
    finality: str | None = None  # pending | final


@attrs.frozen(kw_only=True)
class PositionsUpdate(Message):
    type: ClassVar[str] = "positions_update"
    snapshot: ClassVar[bool] = True
    positions: tuple[PositionView, ...]
    total_collateral: Decimal
    total_unrealized_pnl: Decimal
    total_equity: Decimal


@attrs.frozen(kw_only=True)
class LiquidationWarning(Message):
    type: ClassVar[str] = "liquidation_warning"
    position_id: str
    market_id: str
    health_factor: Decimal
    liquidation_price: Decimal
    mark_price: Decimal
    severity: str  # warning | critical | liquidatable
    health_factor_conservative: Decimal | None = None
    liquidatable: bool = False
    update_data: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class PositionEvent(Message):
    """Base of the chain-event messages; ``finality`` says how settled it is."""

    position_id: str
    market_id: str
    event: EventRef
    finality: str  # pending | final | reverted
    side: str | None = None
    size: Decimal | None = None
    collateral: Decimal | None = None
    entry_price: Decimal | None = None
    price: Decimal | None = None
    realized_pnl: Decimal | None = None
    reward: Decimal | None = None
    liquidator: str | None = None


@attrs.frozen(kw_only=True)
class PositionOpened(PositionEvent):
    type: ClassVar[str] = "position_opened"


@attrs.frozen(kw_only=True)
class PositionModified(PositionEvent):
    type: ClassVar[str] = "position_modified"


@attrs.frozen(kw_only=True)
class PositionClosed(PositionEvent):
    type: ClassVar[str] = "position_closed"


@attrs.frozen(kw_only=True)
class PositionLiquidated(PositionEvent):
    type: ClassVar[str] = "position_liquidated"


@attrs.frozen(kw_only=True)
class PositionReverted(PositionEvent):
    """An event undone by a chain reorg; ``reverted_type`` names the undone event."""

    type: ClassVar[str] = "position_reverted"
    reverted_type: str


@attrs.frozen(kw_only=True)
class Candidate:
    position_id: str
    user_address: str
    market_id: str
    side: str
    size: Decimal
    health_factor: Decimal | None
    liquidation_price: Decimal | None
    mark_price: Decimal
    distance_pct: Decimal | None
    potential_reward: Decimal
    liquidatable: bool
    health_factor_conservative: Decimal | None = None
    equity: Decimal | None = None
    maintenance_margin: Decimal | None = None
    update_data: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class LiquidationAlert(Message):
    type: ClassVar[str] = "liquidation_alert"
    snapshot: ClassVar[bool] = True
    candidates: tuple[Candidate, ...]
    total_at_risk: int
    total_liquidatable: int


@attrs.frozen(kw_only=True)
class LiquidationEvent(Message):
    """A position's liquidatability changed, market-wide, in the tick that changed it.

    ``kind``: ``liquidatable`` (the contract would accept ``liquidate`` at
    ``mark_price``), ``recovered`` (no longer), ``closed`` (closed by its owner
    while liquidatable) or ``liquidated`` (on chain; ``event`` and
    ``liquidator`` say where and by whom). ``id`` is unique per event; the
    same event seen twice (two subscriptions, a replay) has the same id.
    Risk fields are the contract's view at ``mark_price`` (null when the
    market has no price).
    """

    type: ClassVar[str] = "liquidation_event"
    id: str
    kind: str  # liquidatable | recovered | closed | liquidated
    user_address: str
    market_id: str
    position_id: str
    side: str
    size: Decimal
    equity: Decimal | None
    maintenance_margin: Decimal | None
    shortfall: Decimal | None
    health_factor: Decimal | None
    mark_price: Decimal | None
    potential_reward: Decimal | None
    publish_time: int | None
    update_data: tuple[str, ...] = ()
    event: EventRef | None = None
    liquidator: str | None = None


@attrs.frozen(kw_only=True)
class MarketStats(Message):
    type: ClassVar[str] = "market_stats"
    snapshot: ClassVar[bool] = True
    price: Decimal | None
    long_open_interest: Decimal
    short_open_interest: Decimal
    open_interest_usd: Decimal | None
    skew: Decimal
    funding_rate: Decimal
    predicted_funding_rate: Decimal
    funding_index: Decimal
    open_positions: int
    volume_24h_usd: Decimal
    stale: bool


@attrs.frozen(kw_only=True)
class FundingRateUpdate(Message):
    type: ClassVar[str] = "funding_rate_update"
    funding_rate: Decimal
    previous_funding_rate: Decimal
    funding_index: Decimal
    source: str  # chain | model


@attrs.frozen(kw_only=True)
class Error(Message):
    type: ClassVar[str] = "error"
    code: str
    message: str
    id: int | str | None = None


@attrs.frozen(kw_only=True)
class Pong(Message):
    type: ClassVar[str] = "pong"
    id: int | str | None = None


@attrs.frozen(kw_only=True)
class Resync(Message):
    """The stream's state was rebuilt (an actor restarted): a snapshot follows."""

    type: ClassVar[str] = "resync"
    reason: str


@attrs.frozen(kw_only=True)
class Goodbye(Message):
    type: ClassVar[str] = "goodbye"
    reason: str


@attrs.frozen(kw_only=True)
class Subscribed(Message):
    type: ClassVar[str] = "subscribed"
    id: int | str | None
    subscription: str


@attrs.frozen(kw_only=True)
class Unsubscribed(Message):
    type: ClassVar[str] = "unsubscribed"
    id: int | str | None
    subscription: str


# ---------------------------------------------------------------- encoding


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(Decimal, to_wire)
    return converter


_converter = _make_converter()


def to_data(value: object) -> Any:
    """Any protocol object as JSON-ready data (decimals as plain strings)."""
    return _converter.unstructure(value)


@attrs.frozen
class Frame:
    """A message encoded once, ready to be rendered for any subscription.

    ``body`` is the JSON object's text after its opening brace, so rendering
    for a subscription is one concatenation.
    """

    type: str
    snapshot: bool
    body: str
    ts: int
    #: The stream's offset and epoch the body carries (0 and "" outside a stream).
    offset: int = 0
    epoch: str = ""
    body_bytes: bytes = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        # Encoded once here; every subscriber's bytes share it.
        object.__setattr__(self, "body_bytes", self.body.encode("utf-8"))

    def json(self) -> str:
        """The message as a JSON object without per-subscription fields (for REST)."""
        return "{" + self.body

    def render(self, seq: int, conflated: int = 0) -> str:
        """The frame's text for one subscription at position ``seq``."""
        if conflated:
            return f'{{"seq":{seq},"conflated":{conflated},{self.body}'
        return f'{{"seq":{seq},{self.body}'

    def render_bytes(self, seq: int, conflated: int = 0) -> bytes:
        """:meth:`render`, UTF-8 encoded, without encoding the shared body again."""
        if conflated:
            return b'{"seq":%d,"conflated":%d,' % (seq, conflated) + self.body_bytes
        return b'{"seq":%d,' % seq + self.body_bytes


def encode(
    message: Message,
    *,
    channel: Channel,
    ts: int,
    key: tuple[str, str] | None = None,
    position: tuple[int, str] | None = None,
) -> Frame:
    """Encode a message once: envelope (type, channel, stream key, ts, offset, epoch) then payload.

    ``position`` is the message's ``(offset, epoch)`` in its stream; messages
    that belong to no stream (``connected``, acks, errors) have none.
    """
    payload: dict[str, Any] = _converter.unstructure(message)
    envelope: dict[str, Any] = {"type": message.type, "channel": channel.value}
    if key is not None:
        envelope[key[0]] = key[1]
    envelope["ts"] = ts
    offset, epoch = position if position is not None else (0, "")
    if position is not None:
        envelope["offset"] = offset
        envelope["epoch"] = epoch
    envelope.update(payload)
    text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    return Frame(type=message.type, snapshot=message.snapshot, body=text[1:], ts=ts, offset=offset, epoch=epoch)
