"""The command line: version, check-config, and a real `serve` process."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from perpstream.cli import main
from tests.e2e.daemon import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("perpstream ")


def test_check_config_accepts_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "config" / "default.toml")]) == 0


def test_check_config_rejects_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[ws]\nsend_timeout_s = \"soon\"\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "ws.send_timeout_s" in err and str(bad) in err


def test_serve_answers_healthz_on_a_real_socket(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "perpstream", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "daemon did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_check_config_prints_the_effective_config_with_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("PYTH_API_KEY", "very-secret-key")
    monkeypatch.setenv("PERPSTREAM_RPC_URL", "https://node.example/v1/secret-key")
    assert main(["check-config", str(ROOT / "config" / "rpc.example.toml")]) == 0
    out = capsys.readouterr().out
    assert "very-secret-key" not in out and "secret-key" not in out
    effective = json.loads(out)
    assert effective["chain"]["source"] == "rpc"
    assert effective["environment"]["feed.hermes.api_key"] == {"variable": "PYTH_API_KEY", "set": True, "value": "****"}
    assert effective["environment"]["chain.rpc_url"]["set"] is True
    assert effective["markets"][0]["maintenance_margin_ratio"] == "0.005"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[streams]\nprices_interval_ms = -5\n", "streams.prices_interval_ms: -5"),
        ("[streams]\nprices_interval_ms = 0\n", "streams.prices_interval_ms: 0"),
        ("[ws]\nmax_frame_bytes = 0\n", "ws.max_frame_bytes: 0"),
        ("[streams]\nliquidation_candidates = 0\n", "streams.liquidation_candidates: 0"),
    ],
)
def test_serve_and_check_config_refuse_an_out_of_range_value_without_a_traceback(
    tmp_path: Path, toml: str, key: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    for command in (["check-config", str(bad)], ["serve", "--config", str(bad)]):
        done = subprocess.run([sys.executable, "-m", "perpstream", *command], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert str(bad) in done.stderr and key in done.stderr and "out of range (allowed: >= " in done.stderr


def test_a_port_override_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "70000"]) == 2
    assert "server.port: 70000 is out of range (allowed: >= 1 and <= 65535)" in capsys.readouterr().err


def test_watch_takes_its_default_url_from_perpstream_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from perpstream.cli import _parser

    monkeypatch.setenv("PERPSTREAM_URL", "ws://10.1.2.3:9000")
    assert _parser().parse_args(["watch", "liquidations"]).url == "ws://10.1.2.3:9000"
    assert _parser().parse_args(["watch", "liquidations", "--url", "ws://h:1"]).url == "ws://h:1"
    monkeypatch.delenv("PERPSTREAM_URL")
    assert _parser().parse_args(["watch", "liquidations"]).url == "ws://127.0.0.1:8000"


def test_make_run_passes_port_and_config() -> None:
    def dry_run(*variables: str) -> str:
        done = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "run", *variables], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        return done.stdout.strip().splitlines()[-1]

    assert dry_run("PORT=8100", "CONFIG=config/hermes.example.toml") == (
        ".venv/bin/perpstream serve --config config/hermes.example.toml --port 8100")
    assert dry_run().split() == [".venv/bin/perpstream", "serve", "--config", "config/default.toml"]


def test_a_core_or_an_edge_without_a_bus_and_bad_workers_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--role", "core"]) == 2
    assert '--role core needs [bus] kind = "redis"' in capsys.readouterr().err
    assert main(["serve", "--role", "all", "--workers", "2"]) == 2
    assert "--workers 2: expected 1 to 256, with --role edge only" in capsys.readouterr().err
