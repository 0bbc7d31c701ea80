"""Config loading: defaults, the shipped file, and errors that name key and file."""

from decimal import Decimal
from pathlib import Path

import pytest

from perpstream.config import Config, ConfigError, load_config, parse_config

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
        ("[server]\nport = 70000\n", "server.port: expected 1..65535"),
        ("[log]\nlevel = \"loud\"\n", "log.level: expected one of"),
        ("bogus = 1\n", "(top level): unknown key(s): bogus"),
        ("[[markets]]\nid = \"a\"\nbase = \"A\"\npyth_feed_id = \"zz\"\n", "markets[0].pyth_feed_id"),
        ("[[markets]]\nid = \"a\"\npyth_feed_id = \"" + "ab" * 32 + "\"\n", "markets[0].base: required key is missing"),
        ("[[markets]]\nid = \"a\"\nbase = \"A\"\npyth_feed_id = \"" + "ab" * 32
         + "\"\nmaintenance_margin_ratio = \"lots\"\n", "markets[0].maintenance_margin_ratio: expected a decimal"),
        ("[chain]\nsource = \"rpc\"\n", "chain.contract_address: required"),
        ("[chain]\nrpc_timeout_s = 0\n", "chain.rpc_timeout_s: expected > 0"),
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
    with pytest.raises(ConfigError, match="less than 1/1.2"):
        parse_config(data)


def test_send_timeout_must_outlast_a_ping_interval() -> None:
    with pytest.raises(ConfigError, match="ws.send_timeout_s: must be longer than ws.ping_interval_s"):
        parse_config({"ws": {"send_timeout_s": 10.0, "ping_interval_s": 20.0}})
