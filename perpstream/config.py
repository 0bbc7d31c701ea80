"""TOML configuration loaded into typed attrs classes.

Every key has a default, so an empty file is a valid configuration (the
embedded demo). Parsing is strict where lax parsing would hide a mistake: an
unknown key, a float where an integer belongs, or a bool where a number
belongs is an error that names the file and the key, not a silent coercion.
Money-like values are exact decimals: write them as strings (``"0.005"``) or
integers; a TOML float is accepted through its shortest decimal
representation, which is the number the user typed.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.v import format_exception

from perpstream.domain.prices import normalize_feed_id

__all__ = [
    "Config",
    "ConfigError",
    "MarketConfig",
    "load_config",
    "parse_config",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file that cannot be used, with every problem listed."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


# ---------------------------------------------------------------- sections


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "data"  # relative paths are relative to the working directory


@attrs.frozen
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@attrs.frozen
class SimulatedFeedConfig:
    interval_ms: int = 400  # Pyth's own cadence
    seed: int = 7


@attrs.frozen
class HermesFeedConfig:
    base_url: str = "https://hermes.pyth.network"
    api_key_env: str = "PYTH_API_KEY"  # the key itself never lives in a file
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    rate_limited_wait_s: float = 60.0  # after a 429 without Retry-After (Pyth's documented penalty)
    requests_per_minute: float = 30.0  # request budget of every reconnect path (Pyth allows 180)
    request_burst: int = 6


@attrs.frozen
class FeedConfig:
    source: Literal["simulated", "hermes"] = "simulated"
    stale_after_ms: int = 10_000
    simulated: SimulatedFeedConfig = SimulatedFeedConfig()
    hermes: HermesFeedConfig = HermesFeedConfig()


@attrs.frozen
class DemoConfig:
    enabled: bool = True
    accounts: int = 12
    seed: int = 11
    trade_interval_ms: int = 1500
    funding_interval_ms: int = 30_000


@attrs.frozen
class ChainConfig:
    source: Literal["embedded", "rpc"] = "embedded"
    rpc_url: str = ""
    rpc_url_env: str = "PERPSTREAM_RPC_URL"  # overrides rpc_url when set
    contract_address: str = ""
    start_block: int = 0
    confirmations: int = 3
    poll_interval_ms: int = 1000
    max_block_range: int = 2000
    rpc_timeout_s: float = 15.0  # per JSON-RPC request; a timed-out request is retried
    demo: DemoConfig = DemoConfig()


@attrs.frozen
class StreamsConfig:
    prices_interval_ms: int = 1000
    positions_interval_ms: int = 2000
    liquidations_interval_ms: int = 5000
    market_stats_interval_ms: int = 5000
    liquidation_candidates: int = 20


@attrs.frozen
class WebSocketConfig:
    send_timeout_s: float = 30.0
    ping_interval_s: float = 20.0
    max_frame_bytes: int = 65_536
    max_malformed: int = 3
    max_connections_per_client: int = 64
    max_subscriptions_per_connection: int = 32
    event_buffer: int = 256
    compression: bool = False  # permessage-deflate: costs CPU and ~100 KB per connection


@attrs.frozen
class SessionsConfig:
    grace_s: float = 10.0


@attrs.frozen
class DebugConfig:
    token_env: str = "PERPSTREAM_DEBUG_TOKEN"  # unset: debug routes answer loopback only


@attrs.frozen
class FundingParams:
    skew_scale: Decimal = Decimal("1000")
    max_rate_per_hour: Decimal = Decimal("0.0001")


@attrs.frozen
class SimulatedMarketParams:
    start_price: Decimal = Decimal("100")
    annual_volatility: Decimal = Decimal("0.8")


@attrs.frozen
class MarketConfig:
    id: str
    base: str
    pyth_feed_id: str
    max_leverage: Decimal = Decimal("150")
    maintenance_margin_ratio: Decimal = Decimal("0.005")
    liquidation_fee_ratio: Decimal = Decimal("0.005")
    min_keeper_fee: Decimal = Decimal("5")
    max_keeper_fee: Decimal = Decimal("1000")
    funding: FundingParams = FundingParams()
    simulated: SimulatedMarketParams = SimulatedMarketParams()


def _default_markets() -> tuple[MarketConfig, ...]:
    """The three markets of the embedded demo, on Pyth's real mainnet feed ids."""
    return (
        MarketConfig(
            id="btc-usdc-perp",
            base="BTC",
            pyth_feed_id="e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43",
            funding=FundingParams(skew_scale=Decimal("1000")),
            simulated=SimulatedMarketParams(Decimal("65000"), Decimal("1.0")),
        ),
        MarketConfig(
            id="eth-usdc-perp",
            base="ETH",
            pyth_feed_id="ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace",
            funding=FundingParams(skew_scale=Decimal("20000")),
            simulated=SimulatedMarketParams(Decimal("3400"), Decimal("1.2")),
        ),
        MarketConfig(
            id="sol-usdc-perp",
            base="SOL",
            pyth_feed_id="ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d",
            funding=FundingParams(skew_scale=Decimal("500000")),
            simulated=SimulatedMarketParams(Decimal("150"), Decimal("1.5")),
        ),
    )


@attrs.frozen
class RiskConfig:
    #: A warned position is warned again at the same or a milder level only
    #: once its health is back at 1.2 + this (one warning per episode).
    warning_rearm_margin: Decimal = Decimal("0.05")


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    feed: FeedConfig = FeedConfig()
    chain: ChainConfig = ChainConfig()
    streams: StreamsConfig = StreamsConfig()
    risk: RiskConfig = RiskConfig()
    ws: WebSocketConfig = WebSocketConfig()
    sessions: SessionsConfig = SessionsConfig()
    debug: DebugConfig = DebugConfig()
    markets: tuple[MarketConfig, ...] = attrs.field(factory=_default_markets)

    def market(self, market_id: str) -> MarketConfig | None:
        """The market with this id (case-insensitive), or None."""
        wanted = market_id.lower()
        return next((m for m in self.markets if m.id == wanted), None)


# ---------------------------------------------------------------- strict converter


def _strict(kind: type[T], accepted: tuple[type, ...], name: str) -> Any:
    def structure(value: object, _: type) -> T:
        # bool is an int subclass; a bool where a number belongs is a mistake.
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}, got a boolean")
        if not isinstance(value, accepted):
            raise TypeError(f"expected {name}, got {type(value).__name__} {value!r}")
        return kind(value)  # type: ignore[call-arg]

    return structure


def _structure_decimal(value: object, _: type) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"expected a decimal number (string like \"0.005\"), got {value!r}")
    try:
        result = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise ValueError(f"expected a decimal number, got {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"expected a finite decimal number, got {value!r}")
    return result


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict(int, (int,), "an integer"))
    converter.register_structure_hook(float, _strict(float, (int, float), "a number"))
    converter.register_structure_hook(str, _strict(str, (str,), "a string"))
    converter.register_structure_hook(bool, _strict(bool, (bool,), "true or false"))
    converter.register_structure_hook(Decimal, _structure_decimal)
    converter.register_unstructure_hook(Decimal, str)
    return converter


_converter = _make_converter()


def _validate(config: Config) -> list[str]:
    """Cross-field checks that types alone cannot express."""
    problems: list[str] = []
    if not 0 < config.server.port < 65536:
        problems.append(f"server.port: expected 1..65535, got {config.server.port}")
    seen: set[str] = set()
    for i, market in enumerate(config.markets):
        where = f"markets[{i}]"
        if market.id != market.id.lower() or not market.id:
            problems.append(f"{where}.id: expected a lower-case id, got {market.id!r}")
        if market.id in seen:
            problems.append(f"{where}.id: duplicate market id {market.id!r}")
        seen.add(market.id)
        try:
            normalize_feed_id(market.pyth_feed_id)
        except ValueError as exc:
            problems.append(f"{where}.pyth_feed_id: {exc}")
        # Below 1/1.2, so the warning level (health 1.2) is reachable before equity runs out.
        if not 0 < market.maintenance_margin_ratio * Decimal("1.2") < 1:
            problems.append(f"{where}.maintenance_margin_ratio: expected more than 0 and less than 1/1.2")
        if market.min_keeper_fee > market.max_keeper_fee:
            problems.append(f"{where}: min_keeper_fee exceeds max_keeper_fee")
        if market.funding.skew_scale <= 0:
            problems.append(f"{where}.funding.skew_scale: expected > 0")
    if not config.markets:
        problems.append("markets: at least one market is required")
    if config.chain.source == "rpc" and not (config.chain.rpc_url or os.environ.get(config.chain.rpc_url_env)):
        problems.append(f"chain.rpc_url: required when chain.source = \"rpc\" (or set ${config.chain.rpc_url_env})")
    if config.chain.source == "rpc" and not config.chain.contract_address:
        problems.append("chain.contract_address: required when chain.source = \"rpc\"")
    if config.ws.send_timeout_s <= config.ws.ping_interval_s:
        # A live client is silent for up to one ping interval between pongs.
        problems.append("ws.send_timeout_s: must be longer than ws.ping_interval_s")
    for name in ("confirmations", "poll_interval_ms", "max_block_range"):
        if getattr(config.chain, name) < (0 if name == "confirmations" else 1):
            problems.append(f"chain.{name}: out of range")
    if not config.chain.rpc_timeout_s > 0:
        problems.append("chain.rpc_timeout_s: expected > 0")
    return problems


def _describe_error(exc: BaseException, kind: type | None) -> str:
    """One problem in words a user can act on (cattrs' defaults are terse)."""
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown key(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required key is missing"
    if get_origin(kind) is Literal:
        choices = ", ".join(repr(c) for c in get_args(kind))
        return f"expected one of {choices}"
    if isinstance(exc, (TypeError, ValueError)) and exc.args:
        return str(exc)
    return format_exception(exc, kind)


def _readable_path(cattrs_path: str) -> str:
    """``$.markets[0].funding.skew_scale`` → ``markets[0].funding.skew_scale``."""
    return cattrs_path.removeprefix("$").removeprefix(".") or "(top level)"


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Structure already-parsed TOML data; raise ConfigError naming every bad key."""
    try:
        config = _converter.structure(data, Config)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            messages = cattrs.transform_error(exc, path="$", format_exception=_describe_error)
        else:
            messages = [str(exc)]
        problems = []
        for message in messages:
            text, _, path = message.rpartition(" @ ")
            problems.append(f"{_readable_path(path)}: {text}" if text else message)
        raise ConfigError(source, problems) from None
    problems = _validate(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load a TOML file (None: the built-in defaults, the embedded demo)."""
    if path is None:
        return Config()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), [f"not valid TOML: {exc}"]) from None
    return parse_config(data, str(file))


def unstructure(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data (decimals as strings)."""
    result: dict[str, Any] = _converter.unstructure(config)
    return result
