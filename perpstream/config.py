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

import ipaddress
import os
import tomllib
from collections.abc import Iterator
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
    "ranged",
    "validate",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file that cannot be used, with every problem listed."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


# ---------------------------------------------------------------- ranges


@attrs.frozen
class Range:
    """The values a numeric key allows; ``None`` leaves that side open."""

    ge: Decimal | None = None  # at least
    gt: Decimal | None = None  # more than
    le: Decimal | None = None  # at most
    lt: Decimal | None = None  # less than

    def __contains__(self, value: object) -> bool:
        number = Decimal(str(value))
        return not (
            (self.ge is not None and number < self.ge)
            or (self.gt is not None and number <= self.gt)
            or (self.le is not None and number > self.le)
            or (self.lt is not None and number >= self.lt)
        )

    def __str__(self) -> str:
        low = f">= {self.ge}" if self.ge is not None else f"> {self.gt}" if self.gt is not None else ""
        high = f"<= {self.le}" if self.le is not None else f"< {self.lt}" if self.lt is not None else ""
        return " and ".join(part for part in (low, high) if part) or "any number"


Bound = Decimal | float | int | str | None


def _bound(value: Bound) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def ranged(
    default: T,
    *,
    ge: Bound = None,
    gt: Bound = None,
    le: Bound = None,
    lt: Bound = None,
) -> T:
    """A numeric key with its default and allowed range: ``port: int = ranged(8000, ge=1, le=65535)``.

    The range is checked when a file is loaded (every violation listed, with
    the key's full path), so a bad value is a clear error at start-up rather
    than a crash loop deep inside an actor. Every int, float and Decimal key
    must be declared this way; a test walks the config classes to hold that.
    """
    bounds = Range(_bound(ge), _bound(gt), _bound(le), _bound(lt))
    result: T = attrs.field(default=default, metadata={"range": bounds})
    return result


# ---------------------------------------------------------------- sections


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = ranged(8000, ge=1, le=65535)
    data_dir: str = "data"  # relative paths are relative to the working directory


@attrs.frozen
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@attrs.frozen
class SimulatedFeedConfig:
    interval_ms: int = ranged(400, ge=1, le=3_600_000)  # Pyth's own cadence
    seed: int = ranged(7, ge=0)


@attrs.frozen
class HermesFeedConfig:
    base_url: str = "https://hermes.pyth.network"
    api_key_env: str = "PYTH_API_KEY"  # the key itself never lives in a file
    connect_timeout_s: float = ranged(10.0, gt=0, le=600)
    read_timeout_s: float = ranged(30.0, gt=0, le=3600)
    backoff_initial_s: float = ranged(0.5, gt=0, le=600)
    backoff_max_s: float = ranged(30.0, gt=0, le=3600)
    rate_limited_wait_s: float = ranged(60.0, gt=0, le=3600)  # after a 429 without Retry-After (Pyth's documented penalty)
    requests_per_minute: float = ranged(30.0, gt=0, le=6000)  # request budget of every reconnect path (Pyth allows 180)
    request_burst: int = ranged(6, ge=1, le=1000)


@attrs.frozen
class FeedConfig:
    source: Literal["simulated", "hermes"] = "simulated"
    stale_after_ms: int = ranged(10_000, ge=1)
    simulated: SimulatedFeedConfig = SimulatedFeedConfig()
    hermes: HermesFeedConfig = HermesFeedConfig()


@attrs.frozen
class DemoConfig:
    enabled: bool = True
    accounts: int = ranged(12, ge=1, le=10_000)
    seed: int = ranged(11, ge=0)
    trade_interval_ms: int = ranged(1500, ge=1)
    funding_interval_ms: int = ranged(30_000, ge=1)


@attrs.frozen
class ChainConfig:
    source: Literal["embedded", "rpc"] = "embedded"
    rpc_url: str = ""
    rpc_url_env: str = "PERPSTREAM_RPC_URL"  # overrides rpc_url when set
    contract_address: str = ""
    start_block: int = ranged(0, ge=0)
    confirmations: int = ranged(3, ge=0, le=10_000)
    poll_interval_ms: int = ranged(1000, ge=1, le=3_600_000)
    max_block_range: int = ranged(2000, ge=1, le=1_000_000)
    # per JSON-RPC request; a timed-out request is retried
    rpc_timeout_s: float = ranged(15.0, gt=0, le=600)
    demo: DemoConfig = DemoConfig()


@attrs.frozen
class StreamsConfig:
    prices_interval_ms: int = ranged(1000, ge=1, le=3_600_000)
    positions_interval_ms: int = ranged(2000, ge=1, le=3_600_000)
    liquidations_interval_ms: int = ranged(5000, ge=1, le=3_600_000)
    market_stats_interval_ms: int = ranged(5000, ge=1, le=3_600_000)
    liquidation_candidates: int = ranged(20, ge=1, le=10_000)
    #: Events kept per stream for clients that resume, and for how long.
    history_size: int = ranged(100, ge=1, le=100_000)
    history_ttl_s: float = ranged(300.0, gt=0, le=7 * 86_400)


@attrs.frozen
class WebSocketConfig:
    send_timeout_s: float = ranged(30.0, gt=0, le=3600)
    ping_interval_s: float = ranged(20.0, gt=0, le=3600)
    # A subscribe request with a long id must fit; 16 MiB bounds a reader's memory.
    max_frame_bytes: int = ranged(65_536, ge=1024, le=16 * 1024 * 1024)
    max_malformed: int = ranged(3, ge=1, le=1000)
    # Open connections per client address (see [limits] for the rest of an address's allowance).
    max_connections_per_client: int = ranged(64, ge=1)
    max_subscriptions_per_connection: int = ranged(32, ge=1)
    event_buffer: int = ranged(256, ge=1, le=1_000_000)
    compression: bool = False  # permessage-deflate: costs CPU and ~100 KB per connection


@attrs.frozen
class LimitsConfig:
    """What one client address may hold and how fast it may ask (docs/websocket.md, Limits)."""

    max_subscriptions_per_client: int = ranged(1000, ge=1)  # across all its connections
    max_accounts_per_client: int = ranged(32, ge=1)  # distinct positions streams across its connections
    subscribe_rate_per_s: float = ranged(5.0, gt=0)  # subscribe/unsubscribe per connection, refilled
    subscribe_burst: int = ranged(20, ge=1)  # requests a connection may send at once
    strikes_before_cooldown: int = ranged(5, ge=1)  # limit hits within strike_window_s ...
    strike_window_s: float = ranged(60.0, gt=0, le=86_400)
    cooldown_s: float = ranged(60.0, ge=0, le=86_400)  # ... refuse its handshakes this long (0: never)
    # Peers whose X-Forwarded-For names the client (addresses or CIDR networks); none by default.
    trusted_proxies: tuple[str, ...] = ()


@attrs.frozen
class SessionsConfig:
    grace_s: float = ranged(10.0, ge=0, le=86_400)


@attrs.frozen
class BusConfig:
    """How a core and its edges talk (``--role core`` / ``--role edge``); one process needs none."""

    kind: Literal["local", "redis"] = "local"
    url: str = "redis://127.0.0.1:6379/0"
    url_env: str = "PERPSTREAM_REDIS_URL"  # overrides url when set (URLs may hold a password)
    prefix: str = "perpstream"  # of every key: several deployments can share one Redis
    lease_ttl_s: float = ranged(5.0, ge=0.5, le=600)  # an active core that stops renewing is replaced after this
    interest_ttl_s: float = ranged(30.0, ge=1, le=3600)  # an edge's claim on an account's session
    max_backlog: int = ranged(100_000, ge=100, le=10_000_000)  # writes a core queues while Redis is away


@attrs.frozen
class DebugConfig:
    token_env: str = "PERPSTREAM_DEBUG_TOKEN"  # unset: debug routes answer loopback only


@attrs.frozen
class MetricsConfig:
    # "public": anyone may scrape /metrics; "debug": the same rule as /debug
    # (the bearer token when one is set, else loopback peers only).
    access: Literal["public", "debug"] = "public"


@attrs.frozen
class FundingParams:
    skew_scale: Decimal = ranged(Decimal("1000"), gt=0)
    max_rate_per_hour: Decimal = ranged(Decimal("0.0001"), ge=0, le=1)


@attrs.frozen
class SimulatedMarketParams:
    start_price: Decimal = ranged(Decimal("100"), gt=0)
    annual_volatility: Decimal = ranged(Decimal("0.8"), ge=0, le=10_000)


@attrs.frozen
class MarketConfig:
    id: str
    base: str
    pyth_feed_id: str
    max_leverage: Decimal = ranged(Decimal("150"), ge=1, le=10_000)
    # Also below 1/1.2 (checked with the other fields), so the warning level is reachable.
    maintenance_margin_ratio: Decimal = ranged(Decimal("0.005"), gt=0, lt=1)
    liquidation_fee_ratio: Decimal = ranged(Decimal("0.005"), ge=0, lt=1)
    min_keeper_fee: Decimal = ranged(Decimal("5"), ge=0)
    max_keeper_fee: Decimal = ranged(Decimal("1000"), ge=0)
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
    warning_rearm_margin: Decimal = ranged(Decimal("0.05"), ge=0, le=10)


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    feed: FeedConfig = FeedConfig()
    chain: ChainConfig = ChainConfig()
    streams: StreamsConfig = StreamsConfig()
    risk: RiskConfig = RiskConfig()
    ws: WebSocketConfig = WebSocketConfig()
    limits: LimitsConfig = LimitsConfig()
    sessions: SessionsConfig = SessionsConfig()
    debug: DebugConfig = DebugConfig()
    metrics: MetricsConfig = MetricsConfig()
    bus: BusConfig = BusConfig()
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


def _structure_literal(value: object, kind: Any) -> object:
    choices = get_args(kind)
    if value not in choices or isinstance(value, bool) != any(isinstance(c, bool) for c in choices):
        raise ValueError(f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict(int, (int,), "an integer"))
    converter.register_structure_hook(float, _strict(float, (int, float), "a number"))
    converter.register_structure_hook(str, _strict(str, (str,), "a string"))
    converter.register_structure_hook(bool, _strict(bool, (bool,), "true or false"))
    converter.register_structure_hook(Decimal, _structure_decimal)
    converter.register_structure_hook_func(lambda kind: get_origin(kind) is Literal, _structure_literal)
    converter.register_unstructure_hook(Decimal, str)
    return converter


_converter = _make_converter()


def _range_problems(value: object, where: str) -> Iterator[str]:
    """Every ranged key out of its range, anywhere in a structured config."""
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _range_problems(item, f"{where}[{i}]")
        return
    if not attrs.has(type(value)):
        return
    for field in attrs.fields(type(value)):  # type: ignore[arg-type]
        current = getattr(value, field.name)
        path = f"{where}.{field.name}" if where else field.name
        bounds: Range | None = field.metadata.get("range")
        if bounds is not None and current not in bounds:
            yield f"{path}: {current} is out of range (allowed: {bounds})"
        yield from _range_problems(current, path)


def _validate(config: Config) -> list[str]:
    """Ranges, then the checks between fields that types and ranges cannot express."""
    problems = list(_range_problems(config, ""))
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
        if market.maintenance_margin_ratio * Decimal("1.2") >= 1:
            problems.append(f"{where}.maintenance_margin_ratio: {market.maintenance_margin_ratio} is out of range "
                            "(allowed: more than 0 and less than 1/1.2)")
        if market.min_keeper_fee > market.max_keeper_fee:
            problems.append(f"{where}: min_keeper_fee exceeds max_keeper_fee")
    if not config.markets:
        problems.append("markets: at least one market is required")
    if config.chain.source == "rpc" and not (config.chain.rpc_url or os.environ.get(config.chain.rpc_url_env)):
        problems.append(f"chain.rpc_url: required when chain.source = \"rpc\" (or set ${config.chain.rpc_url_env})")
    if config.chain.source == "rpc" and not config.chain.contract_address:
        problems.append("chain.contract_address: required when chain.source = \"rpc\"")
    if config.ws.send_timeout_s <= config.ws.ping_interval_s:
        # A live client is silent for up to one ping interval between pongs.
        problems.append("ws.send_timeout_s: must be longer than ws.ping_interval_s")
    if config.feed.hermes.backoff_initial_s > config.feed.hermes.backoff_max_s:
        problems.append("feed.hermes.backoff_initial_s: must not exceed feed.hermes.backoff_max_s")
    if not config.bus.prefix or any(c in config.bus.prefix for c in " *?[]"):
        problems.append(f"bus.prefix: expected a non-empty key prefix without spaces or glob characters, "
                        f"got {config.bus.prefix!r}")
    for i, proxy in enumerate(config.limits.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append(f"limits.trusted_proxies[{i}]: {proxy!r} is not an IP address or CIDR network")
    return problems


def check_role(config: Config, role: str) -> None:
    """A core or an edge needs a bus between them: ConfigError otherwise."""
    if role != "all" and config.bus.kind != "redis":
        raise ConfigError("--role", [f"--role {role} needs [bus] kind = \"redis\" (got {config.bus.kind!r}); "
                                     "--role all runs in one process without a bus"])


def validate(config: Config, source: str = "<config>") -> Config:
    """``config`` if every key is in range and the fields agree; else ConfigError naming each problem.

    For configs changed after loading (command-line overrides, tests).
    """
    problems = _validate(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def _describe_error(exc: BaseException, kind: type | None) -> str:
    """One problem in words a user can act on (cattrs' defaults are terse)."""
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown key(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required key is missing"
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
    return validate(config, source)


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
