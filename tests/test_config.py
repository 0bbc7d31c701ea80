"""Config loading: defaults, the shipped file, and errors that name key and file."""

from decimal import Decimal
from pathlib import Path

import pytest

import attrs

from perpstream.config import Config, ConfigError, load_config, parse_config, ranged

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_default_file_equals_built_in_defaults() -> None:
    # config/default.toml documents every key; it must not drift from the code.
    assert load_config(ROOT / "config" / "default.toml") == Config()


def test_empty_file_is_the_embedded_demo(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    config = load_config(path)
    assert [m.id for m in config.markets] == ["btc-usdc-perp", "eth-usdc-perp", "sol-usdc-perp"]
    assert config.feed.source == "simulated"
    assert config.chain.source == "embedded"


def test_decimals_stay_exact() -> None:
    data = {"markets": [{"id": "x-perp", "base": "X", "pyth_feed_id": "ab" * 32,
                         "maintenance_margin_ratio": 0.005, "min_keeper_fee": "0.1", "max_keeper_fee": 3}]}
    market = parse_config(data).markets[0]
    assert market.maintenance_margin_ratio == Decimal("0.005")
    assert market.min_keeper_fee == Decimal("0.1")
    assert market.max_keeper_fee == Decimal(3)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[server]\nprot = 1\n", "server: unknown key(s): prot"),
        ("[server]\nport = 1.5\n", "server.port: expected an integer, got float 1.5"),
        ("[server]\nport = true\n", "server.port: expected an integer, got a boolean"),
        ("[server]\nport = 70000\n", "server.port: 70000 is out of range (allowed: >= 1 and <= 65535)"),
        ("[log]\nlevel = \"loud\"\n", "log.level: expected one of 'debug', 'info', 'warning', 'error', got 'loud'"),
        ("bogus = 1\n", "(top level): unknown key(s): bogus"),
        ("[[markets]]\nid = \"a\"\nbase = \"A\"\npyth_feed_id = \"zz\"\n", "markets[0].pyth_feed_id"),
        ("[[markets]]\nid = \"a\"\npyth_feed_id = \"" + "ab" * 32 + "\"\n", "markets[0].base: required key is missing"),
        ("[[markets]]\nid = \"a\"\nbase = \"A\"\npyth_feed_id = \"" + "ab" * 32
         + "\"\nmaintenance_margin_ratio = \"lots\"\n", "markets[0].maintenance_margin_ratio: expected a decimal"),
        ("[chain]\nsource = \"rpc\"\n", "chain.contract_address: required"),
        ("[chain]\nrpc_timeout_s = 0\n", "chain.rpc_timeout_s: 0.0 is out of range (allowed: > 0 and <= 600)"),
        ("[streams]\nprices_interval_ms = -5\n", "streams.prices_interval_ms: -5 is out of range (allowed: >= 1"),
        ("[streams]\nprices_interval_ms = 0\n", "streams.prices_interval_ms: 0 is out of range (allowed: >= 1"),
        ("[ws]\nmax_frame_bytes = 0\n", "ws.max_frame_bytes: 0 is out of range (allowed: >= 1024"),
        ("[streams]\nliquidation_candidates = 0\n", "streams.liquidation_candidates: 0 is out of range (allowed: >= 1"),
        ("[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "limits.trusted_proxies[0]: '10.0.0.0/33' is not an IP"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("name", ["hermes.example.toml", "rpc.example.toml"])
def test_example_configs_are_valid(name: str) -> None:
    config = load_config(ROOT / "config" / name)
    assert config.feed.source == "hermes"
    assert config.feed.hermes.api_key_env == "PYTH_API_KEY"


def test_maintenance_margin_must_leave_room_for_the_warning_level() -> None:
    data = {"markets": [{"id": "x-perp", "base": "X", "pyth_feed_id": "ab" * 32, "maintenance_margin_ratio": "0.9"}]}
    with pytest.raises(ConfigError, match=r"markets\[0\].maintenance_margin_ratio: 0.9 is out of range .*less than 1/1.2"):
        parse_config(data)


def test_send_timeout_must_outlast_a_ping_interval() -> None:
    with pytest.raises(ConfigError, match="ws.send_timeout_s: must be longer than ws.ping_interval_s"):
        parse_config({"ws": {"send_timeout_s": 10.0, "ping_interval_s": 20.0}})


def _numeric_fields(cls: type, where: str = "") -> list[tuple[str, attrs.Attribute]]:  # type: ignore[type-arg]
    """Every int, float and Decimal key of a config class and the classes inside it."""
    found = []
    for field in attrs.fields(cls):
        path = f"{where}.{field.name}" if where else field.name
        kind = field.type
        inner = getattr(kind, "__args__", (None,))[0] if str(kind).startswith("tuple[") else kind
        if isinstance(inner, type) and attrs.has(inner):
            found += _numeric_fields(inner, path)
        elif kind in (int, float, Decimal, "int", "float", "Decimal"):
            found.append((path, field))
    return found


def test_every_numeric_key_declares_its_range() -> None:
    fields = attrs.resolve_types(Config)
    assert fields is Config
    numeric = _numeric_fields(Config)
    assert len(numeric) > 40  # the walk reaches every section, markets included
    missing = [path for path, field in numeric if "range" not in field.metadata]
    assert not missing, f"declare these with ranged(default, ge=..., le=...): {missing}"


def test_every_ranged_default_is_in_its_own_range() -> None:
    # parse_config({}) validates the defaults: a default outside its range fails here.
    assert parse_config({}) == Config()


def test_each_range_bound_is_enforced_on_both_sides() -> None:
    @attrs.frozen
    class Probe:
        count: int = ranged(5, ge=1, le=10)
        ratio: float = ranged(0.5, gt=0, lt=1)

    fields = {f.name: f.metadata["range"] for f in attrs.fields(Probe)}
    assert [v in fields["count"] for v in (0, 1, 10, 11)] == [False, True, True, False]
    assert [v in fields["ratio"] for v in (0, 0.001, 0.999, 1)] == [False, True, True, False]
    assert str(fields["ratio"]) == "> 0 and < 1"


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"streams": {"prices_interval_ms": 0}, "chain": {"max_block_range": 0},
                      "feed": {"simulated": {"interval_ms": -1}}})
    assert len(info.value.problems) == 3


def test_trusted_proxies_take_addresses_and_networks() -> None:
    config = parse_config({"limits": {"trusted_proxies": ["10.0.0.0/8", "::1", "192.168.1.7"]}})
    assert config.limits.trusted_proxies == ("10.0.0.0/8", "::1", "192.168.1.7")
