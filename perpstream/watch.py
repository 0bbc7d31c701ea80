"""``perpstream watch``: follow one of the daemon's streams in a terminal.

    perpstream watch prices btc-usdc-perp
    perpstream watch positions 0x…
    perpstream watch liquidations
    perpstream watch market-stats eth-usdc-perp
    perpstream watch                      # a numbered menu of the streams

It is an ordinary WebSocket client of the public protocol (nothing here
reaches into the daemon), so it doubles as a reference for writing one:
it reconnects with exponential backoff and full jitter and resumes the
stream where it left off (``?epoch=…&offset=…``: the server replays what
was missed meanwhile, or says it cannot, which is shown), never shows a
message twice (offsets at or below the last one of the epoch are
skipped), shows conflation and sequence gaps, says when a ``resync``
makes the next snapshot authoritative, and shows each chain event once
per finality even when it comes again.

Three layers: the menu (stdin, REST look-ups to offer markets and
accounts), the rendering (pure: a message in, lines of text out, aligned
columns, ANSI colour only when asked), and the connection loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any, Final, TextIO
from urllib.parse import urlencode

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, connect_websocket_url
from wsproto.utilities import LocalProtocolError

from perpstream.backoff import Backoff

__all__ = [
    "Renderer",
    "ResumePoint",
    "StreamChoice",
    "Style",
    "add_watch_parser",
    "choose_stream",
    "colour_wanted",
    "run_watch",
    "watch_stream",
]

DEFAULT_URL: Final = "ws://127.0.0.1:8000"

# Close codes after which reconnecting cannot help: the request itself is wrong.
FATAL_CLOSE_CODES: Final = {1008: "policy violation", 4400: "invalid parameter", 4404: "unknown market"}

_CONNECT_TIMEOUT_S: Final = 10.0
_CLOSE_TIMEOUT_S: Final = 1.0
_SEEN_EVENTS: Final = 4096  # chain events remembered for de-duplication


# ---------------------------------------------------------------- streams


@attrs.frozen
class StreamKind:
    name: str  # as typed on the command line
    path: str  # URL path template
    needs: str | None  # "market" | "address" | None
    summary: str


STREAM_KINDS: Final = (
    StreamKind("prices", "/api/v1/ws/prices/{key}", "market", "oracle price of one market"),
    StreamKind("positions", "/api/v1/ws/positions/{key}", "address",
               "one account's positions, PnL, health and warnings"),
    StreamKind("liquidations", "/api/v1/ws/liquidations", None, "accounts at risk across all markets"),
    StreamKind("market-stats", "/api/v1/ws/market-stats/{key}", "market", "open interest and funding of one market"),
)
_KINDS_BY_NAME: Final = {kind.name: kind for kind in STREAM_KINDS}


@attrs.frozen
class StreamChoice:
    """A stream to watch: its kind and, where it has one, its market id or address."""

    kind: str
    key: str | None = None

    def path(self) -> str:
        return _KINDS_BY_NAME[self.kind].path.format(key=self.key)


def ws_base(url: str) -> str:
    """The server's WebSocket base URL (``http(s)://`` accepted, trailing ``/`` dropped)."""
    url = url.rstrip("/")
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(plain):
            return secure + url[len(plain):]
    return url


def http_base(url: str) -> str:
    """The server's REST base URL for a WebSocket base URL."""
    url = ws_base(url)
    return "https://" + url[len("wss://"):] if url.startswith("wss://") else "http://" + url[len("ws://"):]


# ---------------------------------------------------------------- menu


ReadLine = Callable[[str], str | None]  # prompt -> line, None at end of input
FetchJson = Callable[[str], Any]  # REST path -> decoded JSON (raises on failure)


def _ask(read_line: ReadLine, prompt: str, options: list[str]) -> str | None:
    """A number from ``options`` or free text; None at end of input."""
    while True:
        answer = read_line(prompt)
        if answer is None:
            return None
        answer = answer.strip()
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            return options[int(answer) - 1]
        if answer:
            return answer


def _offer(write: Callable[[str], None], rows: list[tuple[str, str]]) -> None:
    width = max((len(value) for value, _ in rows), default=0)
    for number, (value, note) in enumerate(rows, 1):
        write(f"  {number:>2}) {value:<{width}}  {note}".rstrip())


def _known_markets(fetch: FetchJson) -> list[tuple[str, str]]:
    try:
        markets = fetch("/api/v1/markets")["markets"]
        return [(m["market_id"], (m.get("price") or {}).get("price", "")) for m in markets]
    except Exception:  # the menu still works by typing an id
        return []


def _known_accounts(fetch: FetchJson, limit: int = 9) -> list[tuple[str, str]]:
    try:
        positions = fetch("/api/v1/positions?limit=1000")["positions"]
    except Exception:
        return []
    counts: OrderedDict[str, int] = OrderedDict()
    for position in positions:
        counts[position["user_address"]] = counts.get(position["user_address"], 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return [(address, f"{count} open position{'s' if count > 1 else ''}") for address, count in ranked]


def choose_stream(
    read_line: ReadLine,
    write: Callable[[str], None],
    fetch: FetchJson,
    *,
    kind: str | None = None,
) -> StreamChoice | None:
    """Ask which stream to watch (or only its key, when ``kind`` is given); None at end of input."""
    if kind is None:
        write("Streams:")
        _offer(write, [(k.name, k.summary) for k in STREAM_KINDS])
        names = [k.name for k in STREAM_KINDS]
        while kind not in _KINDS_BY_NAME:
            if kind is not None:
                write(f"no stream {kind!r}; pick 1-{len(names)}")
            kind = _ask(read_line, f"stream [1-{len(names)}]: ", names)
            if kind is None:
                return None
    needs = _KINDS_BY_NAME[kind].needs
    if needs is None:
        return StreamChoice(kind)
    rows = _known_markets(fetch) if needs == "market" else _known_accounts(fetch)
    if rows:
        write("Markets:" if needs == "market" else "Accounts with open positions:")
        _offer(write, rows)
    what = "market id" if needs == "market" else "address (0x…)"
    prompt = f"{what} [1-{len(rows)} or type it]: " if rows else f"{what}: "
    key = _ask(read_line, prompt, [value for value, _ in rows])
    return None if key is None else StreamChoice(kind, key)


# ---------------------------------------------------------------- rendering


@attrs.frozen
class Style:
    """ANSI colours, or none at all (pipes, files, ``NO_COLOR``)."""

    colour: bool

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and text else text

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def alarm(self, text: str) -> str:
        return self._wrap("1;31", text)

    def signed(self, text: str) -> str:
        """Green when positive, red when negative (``text`` may be padded)."""
        value = text.strip()
        if value.startswith("-"):
            return self.red(text)
        return text if value.strip("0.") in ("", "—") else self.green(text)

    def side(self, text: str) -> str:
        value = text.strip()
        return self.green(text) if value == "long" else self.red(text) if value == "short" else text


@attrs.frozen
class Column:
    title: str
    width: int
    left: bool = False  # text columns align left, numbers right


Cell = tuple[str, Callable[[str], str] | None]  # plain text, colour applied after padding


def _row(columns: tuple[Column, ...], cells: list[Cell]) -> str:
    """One aligned line; colour goes on after padding so escape codes never skew widths."""
    padded = [
        (f"{text:<{column.width}}" if column.left else f"{text:>{column.width}}", paint)
        for column, (text, paint) in zip(columns, cells, strict=True)
    ]
    while padded and not padded[-1][0].strip():
        padded.pop()  # empty trailing cells
    if padded:
        padded[-1] = (padded[-1][0].rstrip(), padded[-1][1])
    return "  ".join(paint(text) if paint else text for text, paint in padded)


def _header(columns: tuple[Column, ...], style: Style) -> str:
    return style.dim(_row(columns, [(c.title, None) for c in columns]))


def show(value: object, places: int = 8, *, fixed: bool = False) -> str:
    """A wire decimal for display, plain notation; ``—`` for null.

    At most ``places`` decimals, or exactly ``places`` when ``fixed`` (money
    columns line up on the decimal point). Display only: rounding here never
    feeds a calculation.
    """
    if value is None:
        return "—"
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and (fixed or -exponent > places):
        precision = max(28, number.adjusted() + places + 2)  # room for every digit kept
        number = number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN, context=Context(prec=precision))
    if number.is_zero():
        return format(abs(number), "f") if fixed else "0"  # never "-0"
    return format(number, "f")


def short_hex(value: object, keep: int = 6) -> str:
    """``0x62d421…17d6``: enough of a hash or address to tell it apart on screen."""
    text = str(value or "")
    return text if len(text) <= 2 * keep + 3 else f"{text[:keep + 2]}…{text[-4:]}"


def clock(ts_ms: object) -> str:
    """A message's ``ts`` as local wall-clock time with milliseconds."""
    if not isinstance(ts_ms, int):
        return " " * 12
    return datetime.fromtimestamp(ts_ms / 1000).strftime("%H:%M:%S.%f")[:-3]


_PRICE_COLUMNS: Final = (
    Column("TIME", 12, left=True), Column("MARKET", 14, left=True), Column("PRICE", 16), Column("± CONF", 12),
    Column("EMA", 16), Column("AGE", 7), Column("SOURCE", 10, left=True), Column("", 0, left=True),
)
_STATS_COLUMNS: Final = (
    Column("TIME", 12, left=True), Column("PRICE", 14), Column("LONG OI", 12), Column("SHORT OI", 12),
    Column("OI USD", 14), Column("SKEW", 12), Column("FUNDING/H", 13), Column("PREDICTED", 13),
    Column("POS", 4), Column("VOLUME 24H", 14), Column("", 0, left=True),
)
_POSITION_COLUMNS: Final = (
    Column("POSITION", 15, left=True), Column("MARKET", 14, left=True), Column("SIDE", 5, left=True),
    Column("SIZE", 12), Column("ENTRY", 14), Column("MARK", 14), Column("UNREAL. PNL", 12),
    Column("LEV", 7), Column("HEALTH", 9), Column("LIQ. PRICE", 14), Column("", 0, left=True),
)
_CANDIDATE_COLUMNS: Final = (
    Column("HEALTH", 9), Column("MARKET", 14, left=True), Column("SIDE", 5, left=True), Column("SIZE", 12),
    Column("MARK", 14), Column("LIQ. PRICE", 14), Column("DIST %", 8), Column("REWARD", 10),
    Column("ACCOUNT", 15, left=True), Column("POSITION", 15, left=True), Column("", 0, left=True),
)

_EVENT_TYPES: Final = frozenset({
    "position_opened", "position_modified", "position_closed", "position_liquidated", "position_reverted",
})
_SEVERITY_ORDER: Final = ("warning", "critical", "liquidatable")


@attrs.define
class Renderer:
    """Turns the messages of one stream into terminal lines.

    Keeps just enough state to be helpful: whether the table header is
    already on screen, the last ``seq`` (to show gaps), and the chain
    events already shown (a reconnect or a ``final`` copy repeats them).
    """

    style: Style
    header_shown: bool = False
    last_seq: int | None = None
    _seen: OrderedDict[tuple[str, int, str], None] = attrs.field(factory=OrderedDict)

    def reset(self) -> None:
        """A new connection: its ``seq`` starts again at 1 and the header is reprinted."""
        self.header_shown = False
        self.last_seq = None

    def render(self, message: dict[str, Any]) -> list[str]:
        lines = self._gap(message)
        kind = message.get("type")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            lines += handler(message)
        elif kind != "pong":
            lines.append(self.style.dim(f"{clock(message.get('ts'))}  {kind}: {json.dumps(message)}"))
        return lines

    # -------------------------------------------------------- bookkeeping

    def _gap(self, message: dict[str, Any]) -> list[str]:
        lines: list[str] = []
        seq = message.get("seq")
        if isinstance(seq, int):
            if self.last_seq is not None and seq != self.last_seq + 1:
                lines.append(self.style.yellow(f"!! seq jumped {self.last_seq} → {seq}: messages were lost"))
            self.last_seq = seq
        return lines

    def _table(self, columns: tuple[Column, ...]) -> list[str]:
        if self.header_shown:
            return []
        self.header_shown = True
        return [_header(columns, self.style)]

    def _skipped(self, message: dict[str, Any]) -> str:
        conflated = message.get("conflated")
        return self.style.dim(f"(+{conflated} conflated)") if conflated else ""

    # -------------------------------------------------------- system

    def _on_connected(self, message: dict[str, Any]) -> list[str]:
        key = message.get("market_id") or message.get("user_address") or ""
        lines = [self.style.bold(
            f"connected: {message.get('channel')} {key}".rstrip()
            + f" (protocol {message.get('protocol_version')}, every {message.get('interval_ms')} ms)"
        )]
        recovered = message.get("recovered")
        if recovered is True:
            lines.append(self.style.dim("resumed where the last connection ended: the missed messages follow"))
        elif recovered is False:
            lines.append(self.style.yellow("!! could not resume (the server's history has moved on): "
                                           "messages may have been missed; what follows is the current state"))
        return lines

    def _on_resync(self, message: dict[str, Any]) -> list[str]:
        self.header_shown = False
        return [self.style.yellow(f"{clock(message.get('ts'))}  resync ({message.get('reason')}): "
                                  "the server rebuilt this stream; the next snapshot replaces all state")]

    def _on_error(self, message: dict[str, Any]) -> list[str]:
        return [self.style.red(f"{clock(message.get('ts'))}  error {message.get('code')}: {message.get('message')}")]

    def _on_goodbye(self, message: dict[str, Any]) -> list[str]:
        return [self.style.yellow(f"{clock(message.get('ts'))}  goodbye from the server: {message.get('reason')}")]

    # -------------------------------------------------------- prices

    def _on_price_update(self, m: dict[str, Any]) -> list[str]:
        stale = self.style.alarm("STALE") if m.get("stale") else ""
        flags = " ".join(part for part in (stale, self._skipped(m)) if part)
        return self._table(_PRICE_COLUMNS) + [_row(_PRICE_COLUMNS, [
            (clock(m.get("ts")), self.style.dim), (str(m.get("market_id")), None), (show(m.get("price")), self.style.bold),
            (show(m.get("confidence"), 4), None), (show(m.get("ema_price")), None), (f"{m.get('age_ms')}ms", None),
            (str(m.get("source")), self.style.dim), (flags, None),
        ])]

    # -------------------------------------------------------- market stats

    def _on_market_stats(self, m: dict[str, Any]) -> list[str]:
        stale = self.style.alarm("STALE") if m.get("stale") else ""
        flags = " ".join(part for part in (stale, self._skipped(m)) if part)
        return self._table(_STATS_COLUMNS) + [_row(_STATS_COLUMNS, [
            (clock(m.get("ts")), self.style.dim), (show(m.get("price")), self.style.bold),
            (show(m.get("long_open_interest"), 6), None), (show(m.get("short_open_interest"), 6), None),
            (show(m.get("open_interest_usd"), 2, fixed=True), None), (show(m.get("skew"), 6), self.style.signed),
            (show(m.get("funding_rate"), 10), self.style.signed),
            (show(m.get("predicted_funding_rate"), 10), self.style.signed),
            (str(m.get("open_positions")), None), (show(m.get("volume_24h_usd"), 2, fixed=True), None), (flags, None),
        ])]

    def _on_funding_rate_update(self, m: dict[str, Any]) -> list[str]:
        return [self.style.yellow(
            f"{clock(m.get('ts'))}  funding {show(m.get('previous_funding_rate'), 10)} → "
            f"{show(m.get('funding_rate'), 10)} per hour ({m.get('source')}), "
            f"index {show(m.get('funding_index'), 12)}"
        )]

    # -------------------------------------------------------- positions

    def _on_positions_update(self, m: dict[str, Any]) -> list[str]:
        style = self.style
        positions = m.get("positions") or []
        lines = [
            f"{style.dim(clock(m.get('ts')))}  {style.bold(short_hex(m.get('user_address')))}  "
            f"{len(positions)} open  equity {show(m.get('total_equity'), 2, fixed=True)}  "
            f"collateral {show(m.get('total_collateral'), 2, fixed=True)}  "
            f"unrealized {style.signed(show(m.get('total_unrealized_pnl'), 2, fixed=True))} {self._skipped(m)}".rstrip()
        ]
        if positions:
            lines.append("  " + _header(_POSITION_COLUMNS, style))
        for p in positions:
            leverage = p.get("leverage")
            lines.append("  " + _row(_POSITION_COLUMNS, [
                (short_hex(p.get("position_id")), style.dim), (str(p.get("market_id")), None),
                (str(p.get("side")), style.side), (show(p.get("size"), 6), None),
                (show(p.get("entry_price"), 4), None), (show(p.get("mark_price"), 4), None),
                (show(p.get("unrealized_pnl"), 2, fixed=True), style.signed),
                ("—" if leverage is None else show(leverage, 2) + "x", None),
                (show(p.get("health_factor"), 4), self._health_style(p.get("health_factor"))),
                (show(p.get("liquidation_price"), 4), None),
                (style.alarm("STALE") if p.get("stale") else "", None),
            ]))
        return lines

    def _health_style(self, health: object) -> Callable[[str], str] | None:
        if health is None:
            return self.style.alarm
        value = Decimal(str(health))
        if value < Decimal("1.05"):
            return self.style.alarm
        if value < Decimal("1.2"):
            return self.style.yellow
        return None

    def _on_liquidation_warning(self, m: dict[str, Any]) -> list[str]:
        severity = str(m.get("severity"))
        paint = self.style.yellow if severity == "warning" else self.style.alarm
        return [paint(
            f"{clock(m.get('ts'))}  !! {severity.upper():<12} {m.get('market_id')} {short_hex(m.get('position_id'))}"
            f"  health {show(m.get('health_factor'), 4)}  mark {show(m.get('mark_price'), 4)}"
            f"  liquidation at {show(m.get('liquidation_price'), 4)}"
        )]

    def _on_event(self, m: dict[str, Any]) -> list[str]:
        event = m.get("event") or {}
        finality = str(m.get("finality"))
        marker = (str(event.get("tx_hash")), int(event.get("log_index", -1)), finality)
        if marker in self._seen:
            return []  # shown already: a reconnect or a restarted session repeated it
        self._seen[marker] = None
        while len(self._seen) > _SEEN_EVENTS:
            self._seen.popitem(last=False)
        style = self.style
        kind = str(m.get("type"))
        details = [str(m.get("market_id")), style.side(str(m.get("side") or ""))]
        if m.get("size") is not None:
            details.append(f"size {show(m.get('size'), 6)}")
        if m.get("entry_price") is not None:
            details.append(f"@ {show(m.get('entry_price'), 4)}")
        if m.get("price") is not None:
            details.append(f"at {show(m.get('price'), 4)}")
        if m.get("collateral") is not None:
            details.append(f"collateral {show(m.get('collateral'), 2, fixed=True)}")
        if m.get("realized_pnl") is not None:
            details.append(f"pnl {style.signed(show(m.get('realized_pnl'), 2, fixed=True))}")
        if m.get("reward") is not None:
            details.append(f"keeper reward {show(m.get('reward'), 2, fixed=True)}")
        if kind == "position_reverted":
            details.append(f"undoes {m.get('reverted_type')}")
        label = {"pending": style.yellow, "final": style.green}.get(finality, style.alarm)(f"[{finality}]")
        headline = f"{kind:<19}"
        headline = style.alarm(headline) if kind in ("position_liquidated", "position_reverted") else style.bold(headline)
        where = f"block {event.get('block_number')} tx {short_hex(event.get('tx_hash'))}:{event.get('log_index')}"
        return [
            f"{style.dim(clock(m.get('ts')))}  {headline} {short_hex(m.get('position_id'))}  "
            + " ".join(d for d in details if d)
            + f"  {label} {style.dim(where)}"
        ]

    _on_position_opened = _on_position_modified = _on_position_closed = _on_event
    _on_position_liquidated = _on_position_reverted = _on_event

    # -------------------------------------------------------- liquidations

    def _on_liquidation_alert(self, m: dict[str, Any]) -> list[str]:
        style = self.style
        candidates = m.get("candidates") or []
        lines = [
            f"{style.dim(clock(m.get('ts')))}  {style.bold('liquidation candidates')}: "
            f"{m.get('total_at_risk')} at risk, "
            + (style.alarm(f"{m.get('total_liquidatable')} liquidatable") if m.get("total_liquidatable")
               else "0 liquidatable")
            + f" {self._skipped(m)}".rstrip()
        ]
        if candidates:
            lines.append("  " + _header(_CANDIDATE_COLUMNS, style))
        for c in candidates:
            lines.append("  " + _row(_CANDIDATE_COLUMNS, [
                (show(c.get("health_factor"), 4), self._health_style(c.get("health_factor"))),
                (str(c.get("market_id")), None), (str(c.get("side")), style.side), (show(c.get("size"), 6), None),
                (show(c.get("mark_price"), 4), None), (show(c.get("liquidation_price"), 4), None),
                (show(c.get("distance_pct"), 2), None), (show(c.get("potential_reward"), 2, fixed=True), style.green),
                (short_hex(c.get("user_address")), None), (short_hex(c.get("position_id")), style.dim),
                (style.alarm("LIQUIDATABLE") if c.get("liquidatable") else "", None),
            ]))
        return lines


# ---------------------------------------------------------------- connection


@attrs.define
class ResumePoint:
    """The last ``(epoch, offset)`` shown: where to resume, and what would be a repeat."""

    epoch: str | None = None
    offset: int = 0

    def query(self) -> str:
        """The path's query that resumes after the last message shown ('' before any)."""
        return "" if self.epoch is None else "?" + urlencode({"epoch": self.epoch, "offset": self.offset})

    def repeat(self, message: dict[str, Any]) -> bool:
        """Whether ``message`` was shown already (at or below the last offset of its epoch); else note it."""
        offset, epoch = message.get("offset"), message.get("epoch")
        if not isinstance(offset, int) or not isinstance(epoch, str):
            return False  # not a stream message (connected, error, goodbye)
        if epoch == self.epoch and offset <= self.offset:
            return True
        self.epoch, self.offset = epoch, offset
        return False

    def forget(self) -> None:
        """Resuming did not (or cannot) work: the next connection starts afresh."""
        self.epoch, self.offset = None, 0


@attrs.frozen
class Closed:
    """How a connection ended: the close code and reason, or why it never opened."""

    code: int | None
    reason: str


async def _one_connection(url: str, on_message: Callable[[dict[str, Any]], None]) -> Closed:
    """Connect, hand every message to ``on_message`` until the connection ends.

    The connection runs in this function's own nursery, and the close
    handshake is bounded and shielded, so ending the watch (a deadline,
    Ctrl-C) always closes the socket cleanly. Errors raised by
    ``on_message`` (a closed stdout) propagate.
    """
    closed = Closed(None, "connection ended")
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(_CONNECT_TIMEOUT_S):
                    ws = await connect_websocket_url(nursery, url)
            except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
                return Closed(None, _describe(exc))
            try:
                while True:
                    on_message(json.loads(await ws.get_message()))
            except ConnectionClosed as exc:
                reason = exc.reason
                closed = Closed(None, "closed") if reason is None else Closed(reason.code, reason.reason or reason.name)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
                    await ws.aclose()
    except* LocalProtocolError:
        # trio-websocket (<= 0.12) answers a ping that arrives during its own
        # close handshake and fails; the connection is over either way.
        closed = Closed(None, "connection closed during the close handshake")
    return closed


async def watch_stream(
    url: str,
    choice: StreamChoice,
    renderer: Renderer,
    out: TextIO,
    err: TextIO,
    *,
    backoff: Backoff | None = None,
    resume: ResumePoint | None = None,
) -> int:
    """Watch ``choice`` until cancelled; returns 2 when the server refuses the request itself.

    Reconnects after every other disconnect, waiting an exponentially
    growing, fully jittered delay that starts over once a connection has
    said ``connected``, and resumes after the last message shown (the first
    connection too, when given where an earlier watch of the stream left off).
    """
    backoff = backoff or Backoff(initial=0.5, maximum=15.0, jitter=1.0)
    target = ws_base(url) + choice.path()
    resume = resume if resume is not None else ResumePoint()
    last_error: str | None = None

    def on_message(message: dict[str, Any]) -> None:
        nonlocal last_error
        if message.get("type") == "connected":
            backoff.reset()
            if message.get("recovered") is False:
                resume.forget()  # the offsets that follow may belong to another history
        elif message.get("type") == "error":
            last_error = f"{message.get('code')}: {message.get('message')}"
        if resume.repeat(message):
            print(renderer.style.dim(f"(offset {message['offset']} shown already: skipped)"), file=out, flush=True)
            return
        for line in renderer.render(message):
            print(line, file=out, flush=True)

    while True:
        renderer.reset()
        last_error = None
        if resume.epoch is not None:
            print(f"resuming after offset {resume.offset} of epoch {resume.epoch}", file=err, flush=True)
        print(f"connecting to {target}", file=err, flush=True)
        closed = await _one_connection(target + resume.query(), on_message)
        if closed.code == 4400 and resume.epoch is not None and (last_error or "").startswith("invalid_since"):
            print(f"the server cannot resume from there ({last_error}); starting afresh", file=err, flush=True)
            resume.forget()
            continue
        if closed.code in FATAL_CLOSE_CODES:
            why = last_error or FATAL_CLOSE_CODES[closed.code]
            print(f"perpstream watch: the server refused {choice.path()} ({closed.code}): {why}", file=err, flush=True)
            return 2
        delay = backoff.next_delay()
        code = f"close {closed.code} " if closed.code is not None else ""
        print(f"disconnected ({code}{closed.reason}); reconnecting in {delay:.1f} s", file=err, flush=True)
        await trio.sleep(delay)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "connection timed out"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------- command line


def add_watch_parser(subcommands: Any) -> None:
    """Add ``watch`` to the ``perpstream`` command's subcommands."""
    parser = subcommands.add_parser(
        "watch",
        help="follow a stream in the terminal",
        description="Follow one of the daemon's WebSocket streams; with no stream, pick one from a menu.",
    )
    parser.add_argument("stream", nargs="?", choices=[k.name for k in STREAM_KINDS], help="which stream")
    parser.add_argument("key", nargs="?", help="market id (prices, market-stats) or account address (positions)")
    parser.add_argument("--url", default=os.environ.get("PERPSTREAM_URL") or DEFAULT_URL,
                        help=f"the daemon's base URL (default: $PERPSTREAM_URL, else {DEFAULT_URL})")
    parser.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                        help="stop after this long (default: until Ctrl-C)")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                        help="colour output: auto (a terminal without NO_COLOR), always, never")


def colour_wanted(mode: str, out: TextIO) -> bool:
    """``--color``: ``auto`` colours a terminal unless ``NO_COLOR`` is set."""
    if mode == "auto":
        return out.isatty() and not os.environ.get("NO_COLOR")
    return mode == "always"


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        print()
        return None


def _fetcher(url: str) -> FetchJson:
    base = http_base(url)

    def fetch(path: str) -> Any:
        response = httpx.get(base + path, timeout=3.0)
        response.raise_for_status()
        return response.json()

    return fetch


def run_watch(args: argparse.Namespace) -> int:
    """Run ``perpstream watch`` with parsed arguments; returns the exit status."""
    choice: StreamChoice | None
    needs = _KINDS_BY_NAME[args.stream].needs if args.stream else None
    if args.stream and (needs is None or args.key):
        choice = StreamChoice(args.stream, args.key if needs else None)
    else:
        choice = choose_stream(_read_line, print, _fetcher(args.url), kind=args.stream)
        if choice is None:
            print("perpstream watch: no stream chosen", file=sys.stderr)
            return 1
    renderer = Renderer(Style(colour_wanted(args.color, sys.stdout)))

    async def main() -> int:
        with trio.move_on_after(args.duration if args.duration > 0 else float("inf")):
            return await watch_stream(args.url, choice, renderer, sys.stdout, sys.stderr)
        return 0

    status = 0
    try:
        status = trio.run(main)
    except* KeyboardInterrupt:
        pass
    except* BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status
