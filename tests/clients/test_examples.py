"""The examples against a live in-process daemon: Node (``ws``) and Python (trio-websocket).

Each example runs as its own process for a few seconds, as a user would run
it, and its output is checked. The Node tests install the locked ``ws``
package with ``npm ci`` into examples/js/node_modules (tests/clients/conftest.py)
and are skipped when node or npm is not installed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import random
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import trio

from perpstream.watch import Renderer, StreamChoice, Style, watch_stream
from tests.clients.live import (
    Program,
    assert_resumed_without_loss,
    cuttable_proxy,
    demo_account,
    start_program,
    stormy_config,
)
from tests.e2e.daemon import free_port, running_daemon

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JS = EXAMPLES / "js"
PYTHON_CLIENT = EXAMPLES / "python" / "client.py"
DECIMAL = r"-?\d+(\.\d+)?"


def test_the_js_client_library_passes_its_unit_tests(node: str) -> None:
    result = subprocess.run([node, "--test", "test/"], cwd=JS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout


async def test_the_js_examples_stream_monitor_and_pick_liquidations(tmp_path: Path, node: str) -> None:
    async with running_daemon(stormy_config(tmp_path)) as daemon:
        async with httpx.AsyncClient(base_url=daemon.http) as http:
            account = await demo_account(http)
        url = daemon.ws("")
        async with trio.open_nursery() as nursery:
            prices = await start_program(nursery, [node, "prices.js", url, "eth-usdc-perp", "--duration", "4"], cwd=JS)
            positions = await start_program(nursery, [node, "positions.js", url, account.lower(), "--duration", "5"],
                                            cwd=JS)
            bot = await start_program(nursery, [node, "liquidation-bot.js", url], cwd=JS)
            picky_bot = await start_program(nursery, [node, "liquidation-bot.js", url, "--min-reward", "1000000000"],
                                            cwd=JS)
            # The bots run until a position has become liquidatable, however long the machine takes.
            await bot.wait_for(r"^WOULD LIQUIDATE .* \(event\)$", timeout=90)
            await picky_bot.wait_for(r"^SKIP 0x[0-9a-f]{64} \(event\): reward ", timeout=90)
            for program in (bot, picky_bot):
                program.process.send_signal(signal.SIGINT)
            for program in (prices, positions, bot, picky_bot):
                assert await program.wait() == 0, program.output()

    price_lines = prices.matching(rf"^price eth-usdc-perp {DECIMAL} ±{DECIMAL} ema {DECIMAL} age \d+ms")
    assert len(price_lines) >= 3, prices.output()
    assert "(fresh snapshot)" in price_lines[0] and "(fresh snapshot)" not in price_lines[1]
    seqs = [int(line.split(" seq ")[1].split()[0]) for line in price_lines]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    assert positions.matching(rf"^positions {account} open \d+ equity {DECIMAL}"), positions.output()
    assert positions.matching(r"^event position_\w+ \S+ 0x[0-9a-f]{8} 0x[0-9a-f]{8}:\d+ (new|finalized)$"), \
        positions.output()

    acted = bot.matching(r"^WOULD LIQUIDATE 0x[0-9a-f]{64} of 0x[0-9a-fA-F]{40} on \S+ \((long|short) .* "
                         r"with \d+ oracle update\(s\)")
    assert acted, bot.output()
    assert_acted_once_until_it_recovers(bot.stdout)
    assert bot.matching(r"^event liquidatable 0x[0-9a-f]{64} on \S+ health (-?\d+\.\d+|null) \(offset \d+\)$"), \
        bot.output()
    assert picky_bot.matching(r"^alert seq \d+: \d+ candidates"), picky_bot.output()
    assert not picky_bot.matching("WOULD LIQUIDATE")


def assert_acted_once_until_it_recovers(lines: list[str]) -> None:
    """The bot's cooldown: a position is acted on again only after an event said it stopped being liquidatable."""
    acted_on: set[str] = set()
    for line in lines:
        words = line.split()
        if line.startswith("WOULD LIQUIDATE "):
            assert words[2] not in acted_on, f"acted twice on {words[2]} with no event in between:\n" + "\n".join(lines)
            acted_on.add(words[2])
        elif line.startswith("event ") and words[1] != "liquidatable":
            acted_on.discard(words[2])


BOT_EVENT = re.compile(r"^event \w+ 0x[0-9a-f]{64} on \S+ health \S+ \(offset (\d+)\)$")


def bot_events(program: Program) -> list[int]:
    """The offsets of the liquidation events the JS bot printed, in order."""
    return [int(m[1]) for line in program.stdout if (m := BOT_EVENT.match(line))]


async def test_the_js_client_resumes_after_a_dropped_connection_and_misses_nothing(tmp_path: Path, node: str) -> None:
    """The bot, cut off mid-stream, resumes (``since``) and ends with the events of a bot that stayed connected."""
    async with running_daemon(stormy_config(tmp_path)) as daemon, cuttable_proxy(daemon.port) as proxy:
        async with trio.open_nursery() as nursery:
            control = await start_program(nursery, [node, "liquidation-bot.js", daemon.ws("")], cwd=JS)
            await control.wait_for(r"^alert seq \d+:")
            bot = await start_program(nursery, [node, "liquidation-bot.js", proxy.url()], cwd=JS)
            await bot.wait_for(r"^alert seq \d+:")  # it has a position to resume from
            proxy.cut()
            await bot.wait_for(r"^\[bot\] disconnected \(close 1006", stderr=True)
            # Away until the stream has moved on: these events reach the bot only by resuming.
            seen = len(bot_events(control))
            await control.wait_until(lambda: len(bot_events(control)) >= seen + 2)
            away = bot_events(control)[-1]
            proxy.release()
            await bot.wait_for(r"^\[bot\] resumed liquidations: the missed events follow$", stderr=True)
            await bot.wait_until(lambda: max(bot_events(bot), default=0) > away)
            last = bot_events(bot)[-1]
            await control.wait_until(lambda: bot_events(control)[-1] >= last)
            for program in (control, bot):
                program.process.send_signal(signal.SIGINT)
                assert await program.wait() == 0, program.output()
    resuming = [line for line in bot.stderr if line.startswith("[bot] resuming liquidations after offset")]
    assert len(resuming) == 1, bot.output()
    since = int(resuming[0].split()[5])
    assert_resumed_without_loss(bot_events(control), bot_events(bot), since=since, away=away)
    assert not bot.matching("MISSED"), bot.output()


def _load_python_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("perpstream_example_client", PYTHON_CLIENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_python_client_backs_off_with_full_jitter_and_dedupes_events() -> None:
    client = _load_python_client()
    backoff = client.Backoff(initial=0.5, maximum=4.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[3:]) > 2.0  # the cap, not the first ceiling, bounds later draws
    backoff.reset()
    assert backoff.next_delay() <= 0.5

    events = client.EventDeduper(capacity=2)

    def event(tx: str, finality: str) -> dict[str, object]:
        return {"event": {"tx_hash": tx, "log_index": 1}, "finality": finality}

    verdicts = [events.see(event(tx, finality)) for tx, finality in [
        ("0xa", "pending"), ("0xa", "pending"), ("0xa", "final"), ("0xa", "final"),
        ("0xa", "reverted"), ("0xb", "final"), ("0xc", "pending"), ("0xa", "pending"),
    ]]
    assert verdicts == ["new", "duplicate", "finalized", "duplicate", "reverted", "finalized", "new", "new"]

    # A position event names its market, but belongs to the account's stream.
    event_message = {"channel": "positions", "user_address": "0xAb", "market_id": "btc-usdc-perp"}
    assert client.stream_name(event_message) == "positions:0xAb"
    assert client.stream_name({"channel": "market_stats", "market_id": "btc-usdc-perp"}) == "market_stats:btc-usdc-perp"


async def test_clients_ride_out_a_daemon_restart(tmp_path: Path) -> None:
    """The Python example and the terminal client reconnect, resubscribe and resume on a new daemon."""
    config = stormy_config(tmp_path)
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    watch_out, watch_err = io.StringIO(), io.StringIO()
    async with trio.open_nursery() as nursery:
        async with running_daemon(config, port=port) as daemon:
            async with httpx.AsyncClient(base_url=daemon.http) as http:
                account = await demo_account(http)
            client = await start_program(nursery, [
                sys.executable, str(PYTHON_CLIENT), "--url", url, "--prices", "btc-usdc-perp",
                "--market-stats", "eth-usdc-perp", "--positions", account, "--liquidations", "--duration", "60",
            ])
            watching = trio.CancelScope()

            async def watch() -> None:
                with watching:
                    await watch_stream(url, StreamChoice("prices", "btc-usdc-perp"), Renderer(Style(colour=False)),
                                       watch_out, watch_err)

            nursery.start_soon(watch)
            await client.wait_for(r"^\[prices:btc-usdc-perp@\d+\] price [\d.]+ ±[\d.]+ \[fresh snapshot\]$")
            await client.wait_for(r"^\[market_stats:eth-usdc-perp@\d+\] open_interest_usd .* \[fresh snapshot\]$")
            await client.wait_for(r"^\[liquidations@\d+\] candidates \d+ at_risk \d+ liquidatable \d+ "
                                  r"\[fresh snapshot\]$")
            await client.wait_for(rf"^\[positions:{account}@\d+\] positions \d+ equity .* \[fresh snapshot\]$")
            await client.wait_for(rf"^\[positions:{account}@\d+\] position_\w+ 0x[0-9a-f]{{8}} \S+ (pending|final) "
                                  r"-> (new|finalized)$")
        # The first daemon said goodbye (1001); the clients back off and retry.
        await client.wait_for(r"goodbye: server_shutting_down", stderr=True)
        await client.wait_for(r"disconnected \(close 1001: server_shutting_down\); reconnecting in", stderr=True)
        async with running_daemon(config, port=port):
            await client.wait_for(r"\] (connected|resumed) \(connection 2\)", count=4)
            # A restart starts the price stream's history anew: the client says it could not resume.
            await client.wait_for(r"^\[prices:btc-usdc-perp\] connected \(connection 2\): could not resume, events may "
                                  r"have been missed; the next snapshot replaces all state$")
            await client.wait_for(r"^\[prices:btc-usdc-perp@\d+\] price .* \[fresh snapshot\]$", count=2)
            with trio.fail_after(10):
                while watch_out.getvalue().count("connected: prices btc-usdc-perp") < 2:
                    await trio.sleep(0.1)
            watching.cancel()
            client.process.send_signal(signal.SIGINT)
            assert await client.wait() == 0, client.output()
    assert "goodbye from the server: server_shutting_down" in watch_out.getvalue()
    assert "!! could not resume (the server's history has moved on)" in watch_out.getvalue()
    assert "resuming after offset " in watch_err.getvalue()
    assert "disconnected (close 1001 server_shutting_down); reconnecting in" in watch_err.getvalue()
    # After the reconnect the terminal client reprinted its table header for the new connection.
    assert watch_out.getvalue().count("TIME          MARKET") == 2
    # Nothing went missing within either connection.
    assert "messages lost" not in "\n".join(client.stdout)
    assert "seq jumped" not in watch_out.getvalue()


PYTHON_LINE = r"^\[liquidations@\d+\] "
PYTHON_EVENT = re.compile(r"^\[liquidations@(\d+)\] LIQUIDATION ")


def python_events(program: Program) -> list[int]:
    """The offsets of the liquidation events the Python example printed, in order."""
    return [int(m[1]) for line in program.stdout if (m := PYTHON_EVENT.match(line))]


async def test_the_python_client_resumes_after_a_dropped_connection_and_misses_nothing(tmp_path: Path) -> None:
    """Cut off mid-stream, it resumes (``since``) and ends with exactly the events of a client that stayed."""
    async with running_daemon(stormy_config(tmp_path)) as daemon, cuttable_proxy(daemon.port) as proxy:
        async with trio.open_nursery() as nursery:
            argv = [sys.executable, str(PYTHON_CLIENT), "--liquidations", "--duration", "60", "--url"]
            control = await start_program(nursery, [*argv, daemon.ws("")])
            await control.wait_for(PYTHON_LINE)
            client = await start_program(nursery, [*argv, proxy.url()])
            await client.wait_for(PYTHON_LINE)  # it has a position to resume from
            proxy.cut()
            await client.wait_for(r"^client: disconnected \(", stderr=True)
            # Away until the stream has moved on: these events reach the client only by resuming.
            seen = len(python_events(control))
            await control.wait_until(lambda: len(python_events(control)) >= seen + 2)
            away = python_events(control)[-1]
            proxy.release()
            await client.wait_for(r"^\[liquidations\] resumed \(connection 2\): the missed events follow$")
            await client.wait_until(lambda: max(python_events(client), default=0) > away)
            last = python_events(client)[-1]
            await control.wait_until(lambda: python_events(control)[-1] >= last)
            for program in (control, client):
                program.process.send_signal(signal.SIGINT)
                assert await program.wait() == 0, program.output()
    resuming = [line for line in client.stderr if line.startswith("client: resuming liquidations after offset")]
    assert len(resuming) == 1, client.output()
    since = int(resuming[0].split()[5])
    assert_resumed_without_loss(python_events(control), python_events(client), since=since, away=away)
    assert not client.matching("seen already"), client.output()


async def test_the_python_client_drops_repeats_and_starts_afresh_when_a_resume_does_not_recover() -> None:
    """Offsets at or below the last one of the epoch are skipped; ``recovered: false`` forgets the position."""
    module = _load_python_client()
    out = io.StringIO()
    client = module.Client("ws://unused", [{"channel": "liquidations"}], out=out)

    def alert(offset: int, epoch: str = "e1", seq: int = 0) -> dict[str, object]:
        return {"type": "liquidation_alert", "channel": "liquidations", "seq": seq, "offset": offset, "epoch": epoch,
                "candidates": [], "total_at_risk": 0, "total_liquidatable": 0}

    async def handle(*messages: dict[str, object]) -> None:
        for message in messages:
            await client._handle(None, message)

    connected = {"type": "connected", "channel": "liquidations", "seq": 1}
    await handle(connected, alert(5, seq=2), alert(9, seq=3), alert(9, seq=4), alert(7, seq=5))
    assert client.positions == {"liquidations": ("e1", 9)}
    await handle({**connected, "recovered": False}, alert(3, "e2", seq=2))
    assert client.positions == {"liquidations": ("e2", 3)}
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == [
        "[liquidations]", "[liquidations@5]", "[liquidations@9]", "[liquidations]", "[liquidations]",
        "[liquidations]", "[liquidations@3]"]
    assert lines[3:5] == ["[liquidations] liquidation_alert at offset 9 seen already: skipped",
                          "[liquidations] liquidation_alert at offset 7 seen already: skipped"]
    assert "could not resume, events may have been missed" in lines[5]
    assert lines[6].endswith("[fresh snapshot]")


class Outbox:
    """Where the client's requests go in a test of its message handling alone."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    async def send_message(self, text: str) -> None:
        self.sent.append(json.loads(text))


async def test_the_python_client_resumes_on_resubscribing_and_starts_afresh_when_its_since_is_refused() -> None:
    module = _load_python_client()
    client = module.Client("ws://unused", [{"channel": "liquidations"}], out=io.StringIO())
    ws = Outbox()
    await client._subscribe(ws, {"channel": "liquidations"})
    for message in [{"type": "subscribed", "channel": "system", "id": ws.sent[0]["id"], "subscription": "liquidations"},
                    {"type": "connected", "channel": "liquidations", "seq": 1},
                    {"type": "liquidation_alert", "channel": "liquidations", "seq": 2, "offset": 8, "epoch": "e1",
                     "candidates": [], "total_at_risk": 0, "total_liquidatable": 0}]:
        await client._handle(ws, message)
    await client._subscribe(ws, {"channel": "liquidations"})  # as after a reconnect
    assert ws.sent[1]["since"] == {"epoch": "e1", "offset": 8}
    await client._handle(ws, {"type": "error", "channel": "system", "id": ws.sent[1]["id"], "code": "invalid_since",
                              "message": "epoch: expected ..."})
    assert "since" not in ws.sent[2] and ws.sent[2]["channel"] == "liquidations"
    assert client.positions == {}


async def test_the_python_client_stops_when_the_server_refuses_its_subscription(tmp_path: Path) -> None:
    async with running_daemon(stormy_config(tmp_path)) as daemon:
        async with trio.open_nursery() as nursery:
            client = await start_program(nursery, [sys.executable, str(PYTHON_CLIENT), "--url", daemon.ws(""),
                                                   "--prices", "doge-usdc-perp", "--duration", "10"])
            assert await client.wait() == 2, client.output()
    assert any("subscription refused: unknown_market" in line for line in client.stderr), client.output()
