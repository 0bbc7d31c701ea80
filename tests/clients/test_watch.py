"""``perpstream watch``: rendering and the menu without I/O, then against a live daemon."""

from __future__ import annotations

import io
import re
import sys
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from perpstream.backoff import Backoff
from perpstream.watch import (
    Renderer,
    ResumePoint,
    StreamChoice,
    Style,
    choose_stream,
    colour_wanted,
    show,
    watch_stream,
)
from tests.clients.live import (
    assert_resumed_without_loss,
    cuttable_proxy,
    demo_account,
    start_program,
    stormy_config,
)
from tests.e2e.daemon import free_port, running_daemon

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ACCOUNT = "0x181c5657165BBeA7AD1B9bCFC3D74aB348575Cec"


def price(seq: int, **changes: Any) -> dict[str, Any]:
    return {"seq": seq, "type": "price_update", "channel": "prices", "market_id": "btc-usdc-perp",
            "ts": 1_795_494_152_904, "price": "64994.68950599", "confidence": "9.16014779",
            "ema_price": "64999.99416304", "publish_time": 1_795_494_152, "age_ms": 904, "stale": False,
            "source": "simulated", **changes}


def event(finality: str, *, seq: int, type: str = "position_opened") -> dict[str, Any]:
    return {"seq": seq, "type": type, "channel": "positions", "user_address": ACCOUNT, "ts": 1_795_494_160_499,
            "position_id": "0x" + "ac" * 32, "market_id": "sol-usdc-perp", "finality": finality,
            "event": {"block_number": 16, "block_hash": "0x" + "e1" * 32, "tx_hash": "0x" + "f2" * 32,
                      "log_index": 0},
            "side": "long", "size": "13.583788", "collateral": "617.43", "entry_price": "149.9949772",
            "price": None, "realized_pnl": None, "reward": None, "liquidator": None}


# ---------------------------------------------------------------- rendering


def test_show_keeps_decimals_exact_and_plain() -> None:
    assert show("64994.68950599", 2) == "64994.69"
    assert show("5", 2, fixed=True) == "5.00"
    assert show("0.000000000000000001", 8) == "0"
    assert show("-0.000000004", 8) == "0"
    assert show("-1.23", 8) == "-1.23"
    assert show("123456789012345678901234567890.5", 0) == "123456789012345678901234567890"  # not a float
    assert show(None) == "—"


def test_a_price_stream_renders_as_aligned_columns_under_one_header() -> None:
    renderer = Renderer(Style(colour=False))
    lines = renderer.render({"seq": 1, "type": "connected", "channel": "prices", "market_id": "btc-usdc-perp",
                             "ts": 1, "protocol_version": 1, "interval_ms": 1000, "server_time": 1})
    lines += renderer.render(price(2))
    lines += renderer.render(price(3, price="7.5", stale=True, conflated=4))
    assert lines[0] == "connected: prices btc-usdc-perp (protocol 1, every 1000 ms)"
    header, first, second = lines[1:]
    assert header.split() == ["TIME", "MARKET", "PRICE", "±", "CONF", "EMA", "AGE", "SOURCE"]
    # Numbers right-aligned under their titles: the columns end where the titles end.
    end = header.index("PRICE") + len("PRICE")
    assert first[:end].endswith("64994.68950599") and second[:end].endswith("7.5")
    assert second.endswith("STALE (+4 conflated)")
    assert not any(ANSI.search(line) for line in lines)


def test_colour_only_when_asked_and_never_skews_alignment() -> None:
    plain = Renderer(Style(colour=False)).render(price(2))
    coloured = Renderer(Style(colour=True)).render(price(2))
    assert any(ANSI.search(line) for line in coloured)
    assert [ANSI.sub("", line) for line in coloured] == plain


def test_colours_follow_the_values_in_padded_columns() -> None:
    style = Style(colour=True)
    assert style.side("long ") == "\x1b[32mlong \x1b[0m" and style.side("short") == "\x1b[31mshort\x1b[0m"
    assert style.signed("   -1.23") == "\x1b[31m   -1.23\x1b[0m" and style.signed("  4.50") == "\x1b[32m  4.50\x1b[0m"
    assert style.signed("  0.00") == "  0.00" and style.signed("   —") == "   —"


def test_seq_gaps_are_reported_and_events_shown_once_per_finality() -> None:
    renderer = Renderer(Style(colour=False))
    assert renderer.render(event("pending", seq=3))[0].split()[1:3] == ["position_opened", "0xacacac…acac"]
    assert renderer.render(event("pending", seq=4)) == []  # the same event again (a reconnect)
    final = renderer.render(event("final", seq=5))
    assert "[final]" in final[0] and "block 16 tx 0xf2f2f2…f2f2:0" in final[0]
    gap = renderer.render(price(9))
    assert gap[0] == "!! seq jumped 5 → 9: messages were lost"
    renderer.reset()  # a new connection starts again at seq 1
    assert not renderer.render(price(1))[0].startswith("!!")


def test_the_resume_point_skips_repeats_in_its_epoch_and_says_where_to_resume() -> None:
    resume = ResumePoint()
    assert resume.query() == ""
    assert not resume.repeat({"type": "connected", "seq": 1})  # no offset: never a repeat
    assert not resume.repeat(price(2, offset=40, epoch="a1"))
    assert resume.repeat(price(3, offset=40, epoch="a1")) and resume.repeat(price(4, offset=12, epoch="a1"))
    assert not resume.repeat(price(5, offset=41, epoch="a1"))
    assert resume.query() == "?epoch=a1&offset=41"
    assert not resume.repeat(price(2, offset=3, epoch="b2"))  # another history: its offsets start over
    resume.forget()
    assert resume.query() == ""


def test_a_resume_that_did_not_recover_is_shown() -> None:
    connected = {"seq": 1, "type": "connected", "channel": "prices", "market_id": "btc-usdc-perp", "ts": 1,
                 "protocol_version": 1, "interval_ms": 1000, "server_time": 1}
    assert len(Renderer(Style(colour=False)).render(connected)) == 1
    resumed = Renderer(Style(colour=False)).render({**connected, "recovered": True})
    assert resumed[1].startswith("resumed where the last connection ended")
    lost = Renderer(Style(colour=False)).render({**connected, "recovered": False})
    assert lost[1].startswith("!! could not resume") and "messages may have been missed" in lost[1]


def test_warnings_positions_and_candidates_render_every_field_a_user_needs() -> None:
    renderer = Renderer(Style(colour=False))
    warning = renderer.render({"seq": 2, "type": "liquidation_warning", "channel": "positions", "ts": 1,
                               "user_address": ACCOUNT, "position_id": "0x" + "62" * 32, "market_id": "btc-usdc-perp",
                               "health_factor": "1.103", "liquidation_price": "57860.87781448",
                               "mark_price": "58736.24", "severity": "critical"})
    assert re.search(r"!! CRITICAL .* health 1\.103 .* liquidation at 57860\.8778", warning[0])
    update = renderer.render({
        "seq": 3, "type": "positions_update", "channel": "positions", "user_address": ACCOUNT, "ts": 1,
        "positions": [{"position_id": "0x" + "62" * 32, "market_id": "btc-usdc-perp", "side": "long",
                       "size": "0.14141", "entry_price": "64987.90694145", "mark_price": None, "collateral": "563.8",
                       "unrealized_pnl": None, "funding_owed": None, "equity": None, "leverage": None,
                       "health_factor": None, "liquidation_price": None, "stale": True}],
        "total_collateral": "563.8", "total_unrealized_pnl": "0", "total_equity": "563.8"})
    assert "1 open  equity 563.80  collateral 563.80  unrealized 0.00" in update[0]
    assert update[2].split()[-6:] == ["—", "—", "—", "—", "—", "STALE"]  # mark, pnl, lev, health, liq
    alert = renderer.render({
        "seq": 4, "type": "liquidation_alert", "channel": "liquidations", "ts": 1, "total_at_risk": 1,
        "total_liquidatable": 1,
        "candidates": [{"position_id": "0x" + "8b" * 32, "user_address": ACCOUNT, "market_id": "btc-usdc-perp",
                        "side": "long", "size": "0.0069", "health_factor": "0.5", "liquidation_price": "67679.48",
                        "mark_price": "64979.2", "distance_pct": "4.1", "potential_reward": "5",
                        "liquidatable": True}]})
    assert alert[0].endswith("liquidation candidates: 1 at risk, 1 liquidatable")
    assert alert[2].split()[7] == "5.00" and alert[2].endswith("LIQUIDATABLE")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_by_default_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert colour_wanted("auto", Terminal()) and not colour_wanted("auto", io.StringIO())
    assert colour_wanted("always", io.StringIO()) and not colour_wanted("never", Terminal())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_wanted("auto", Terminal())


# ---------------------------------------------------------------- menu


def scripted(answers: list[str]) -> tuple[Any, list[str]]:
    prompts: list[str] = []

    def read_line(prompt: str) -> str | None:
        prompts.append(prompt)
        return answers.pop(0) if answers else None

    return read_line, prompts


def fake_rest(path: str) -> Any:
    if path.startswith("/api/v1/markets"):
        return {"markets": [{"market_id": "btc-usdc-perp", "price": {"price": "65000"}},
                            {"market_id": "eth-usdc-perp", "price": None}]}
    return {"positions": [{"user_address": ACCOUNT}, {"user_address": ACCOUNT}, {"user_address": "0x" + "1" * 40}]}


def test_the_menu_takes_numbers_or_typed_keys_and_offers_known_ones() -> None:
    shown: list[str] = []
    read_line, prompts = scripted(["9", "1", "2"])
    assert choose_stream(read_line, shown.append, fake_rest) == StreamChoice("prices", "eth-usdc-perp")
    assert prompts == ["stream [1-4]: ", "stream [1-4]: ", "market id [1-2 or type it]: "]
    assert "no stream '9'; pick 1-4" in shown
    assert any(line.split() == ["1)", "btc-usdc-perp", "65000"] for line in shown)

    shown.clear()
    read_line, _ = scripted(["positions", "1"])
    assert choose_stream(read_line, shown.append, fake_rest) == StreamChoice("positions", ACCOUNT)
    assert any(line.endswith("2 open positions") for line in shown)  # most positions first

    read_line, _ = scripted(["3"])
    assert choose_stream(read_line, shown.append, fake_rest) == StreamChoice("liquidations")


def test_the_menu_works_without_the_rest_api_and_ends_at_end_of_input() -> None:
    def unreachable(path: str) -> Any:
        raise httpx.ConnectError("refused")

    read_line, prompts = scripted(["SOL-USDC-PERP"])
    choice = choose_stream(read_line, lambda _: None, unreachable, kind="market-stats")
    assert choice == StreamChoice("market-stats", "SOL-USDC-PERP") and prompts == ["market id: "]
    read_line, _ = scripted([])
    assert choose_stream(read_line, lambda _: None, fake_rest) is None


# ---------------------------------------------------------------- live


POSITION_EVENT = r"position_\w+ +0x[0-9a-f]{6}…[0-9a-f]{4}  .*\[(pending|final)\] block \d+"


@pytest.mark.e2e
async def test_every_stream_prints_live_and_a_refused_one_exits_2(tmp_path: Path) -> None:
    async with running_daemon(stormy_config(tmp_path)) as daemon:
        async with httpx.AsyncClient(base_url=daemon.http) as http:
            account = await demo_account(http)
        url = daemon.ws("")
        choices = [StreamChoice("prices", "btc-usdc-perp"), StreamChoice("positions", account.lower()),
                   StreamChoice("liquidations"), StreamChoice("market-stats", "eth-usdc-perp")]
        outputs = {choice.kind: io.StringIO() for choice in choices}
        errors = io.StringIO()
        async with trio.open_nursery() as nursery:
            for choice in choices:
                nursery.start_soon(watch_stream, url, choice, Renderer(Style(colour=False)),
                                   outputs[choice.kind], errors)
            # Three seconds of every stream, and longer if this account's next
            # trade (the demo traders pick accounts at random) has not come yet.
            await trio.sleep(3)
            with trio.fail_after(30):
                while not re.search(POSITION_EVENT, outputs["positions"].getvalue()):
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        refused = io.StringIO()
        status = await watch_stream(url, StreamChoice("prices", "doge-usdc-perp"), Renderer(Style(False)),
                                    io.StringIO(), refused)
        # A resume point the server cannot use is dropped, not fatal: the watch starts afresh.
        afresh, afresh_errors = RecordingRenderer(Style(False)), io.StringIO()
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(watch_stream, url, StreamChoice("liquidations"), afresh, io.StringIO(),
                                           afresh_errors, resume=ResumePoint("x" * 100, 7)))
                await afresh.wait_until(lambda: any(m["type"] == "liquidation_alert" for m in afresh.messages))
                nursery.cancel_scope.cancel()
    assert [m["code"] for m in afresh.messages if m["type"] == "error"] == ["invalid_since"]
    assert "the server cannot resume from there (invalid_since: epoch: " in afresh_errors.getvalue()
    assert status == 2
    assert "the server refused /api/v1/ws/prices/doge-usdc-perp (4404): unknown_market" in refused.getvalue()

    text = {kind: out.getvalue() for kind, out in outputs.items()}
    assert len(re.findall(r"^\d\d:\d\d:\d\d\.\d{3}  btc-usdc-perp +[\d.]+ +[\d.]+ +[\d.]+ +\d+ms  simulated",
                          text["prices"], flags=re.MULTILINE)) >= 3, text["prices"]
    assert f"connected: positions {account}" in text["positions"]
    assert re.search(rf"  {account[:8]}…{account[-4:]}  \d+ open  equity -?[\d.]+", text["positions"])
    assert re.search(POSITION_EVENT, text["positions"])
    assert re.search(r"liquidation candidates: \d+ at risk, \d+ liquidatable", text["liquidations"])
    assert re.search(r"^TIME +PRICE +LONG OI +SHORT OI +OI USD", text["market-stats"], flags=re.MULTILINE)
    assert "seq jumped" not in "".join(text.values())


@pytest.mark.e2e
async def test_the_menu_reads_piped_stdin(tmp_path: Path) -> None:
    async with running_daemon(stormy_config(tmp_path)) as daemon:
        async with trio.open_nursery() as nursery:
            program = await start_program(
                nursery, [sys.executable, "-m", "perpstream", "watch", "--url", daemon.ws(""), "--duration", "2.5"],
                stdin=b"4\n3\n")
            assert await program.wait(timeout=20) == 0, program.output()
    stdout = "\n".join(program.stdout)
    assert "4) market-stats  open interest and funding of one market" in stdout
    assert "3) sol-usdc-perp" in stdout
    assert "connected: market_stats sol-usdc-perp (protocol 1, every 1000 ms)" in stdout
    assert len(program.matching(r"^\d\d:\d\d:\d\d\.\d{3} +[\d.]+ +[\d.]+ +[\d.]+")) >= 2, program.output()
    assert not any("\x1b[" in line for line in program.stdout)  # a pipe gets no colour


@attrs.define
class RecordingRenderer(Renderer):
    """The real renderer, noting each message it is given, so a test can wait on messages."""

    messages: list[dict[str, Any]] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    def render(self, message: dict[str, Any]) -> list[str]:
        self.messages.append(message)
        self.changed.set()
        self.changed = trio.Event()
        return super().render(message)

    def events(self) -> list[int]:
        """The offsets of the liquidation events rendered, in order."""
        return [m["offset"] for m in self.messages if m.get("type") == "liquidation_event"]

    async def wait_until(self, condition: Any, timeout: float = 15) -> None:
        with trio.fail_after(timeout):
            while not condition():
                await self.changed.wait()


@pytest.mark.e2e
async def test_a_dropped_watch_resumes_and_shows_exactly_the_events_it_missed(tmp_path: Path) -> None:
    """Cut off mid-stream, it resumes (``?epoch&offset``) and shows what a watch that stayed connected showed."""
    async with running_daemon(stormy_config(tmp_path)) as daemon, cuttable_proxy(daemon.port) as proxy:
        control, watch = RecordingRenderer(Style(False)), RecordingRenderer(Style(False))
        out, errors = io.StringIO(), io.StringIO()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_stream, daemon.ws(""), StreamChoice("liquidations"), control, io.StringIO(),
                               io.StringIO())
            await control.wait_until(lambda: len(control.messages) >= 2)
            nursery.start_soon(watch_stream, proxy.url(), StreamChoice("liquidations"), watch, out, errors)
            await watch.wait_until(lambda: len(watch.messages) >= 2)  # connected, then the snapshot
            proxy.cut()
            # Away until the stream has moved on: these events reach the watch only by resuming.
            seen = len(control.events())
            await control.wait_until(lambda: len(control.events()) >= seen + 2)
            away = control.events()[-1]
            proxy.release()
            await watch.wait_until(lambda: max(watch.events(), default=0) > away)
            last = watch.events()[-1]
            await control.wait_until(lambda: control.events()[-1] >= last)
            nursery.cancel_scope.cancel()
    connects = [i for i, m in enumerate(watch.messages) if m["type"] == "connected"]
    assert len(connects) == 2 and watch.messages[connects[1]]["recovered"] is True, watch.messages
    since = max(m["offset"] for m in watch.messages[:connects[1]] if "offset" in m)
    assert f"resuming after offset {since} of epoch " in errors.getvalue()
    assert "resumed where the last connection ended" in out.getvalue()
    assert_resumed_without_loss(control.events(), watch.events(), since=since, away=away)


async def test_a_lost_server_is_retried_with_growing_jittered_delays() -> None:
    errors = io.StringIO()
    with trio.move_on_after(1.5):
        await watch_stream(f"ws://127.0.0.1:{free_port()}", StreamChoice("liquidations"),
                           Renderer(Style(False)), io.StringIO(), errors,
                           backoff=Backoff(initial=0.05, maximum=0.4, jitter=1.0))
    delays = [float(d) for d in re.findall(r"reconnecting in ([\d.]+) s", errors.getvalue())]
    assert len(delays) >= 4 and max(delays) <= 0.4
    assert "cannot connect" in errors.getvalue() or "OSError" in errors.getvalue()
