"""Actor failures: a market in a crash loop or broken for good, crashing
sessions (one, or a storm of them), a restarted session directory.

The whole service tree on trio's virtual clock (the scripted feed and the
in-memory store need no real I/O), driven through the app's own test
client, so every backoff and intensity window is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import trio
from eth_utils import to_checksum_address

from actors import Registry, RestartIntensityExceeded
from perpstream.config import Config
from perpstream.services.topics import market_name, session_name
from perpstream.services.tree import MARKETS_INTENSITY, RESTART_BACKOFF
from perpstream.web.health import install_health
from tests.integration.harness import ALICE, BOB, BTC, BTC_FEED, running_service, service_config, stored

from .virtual import ETH, ETH_FEED, FailingStore, Recorder, gaps, node, recorders

BTC_MARKET = market_name(BTC)
LOOPBACK = {"client": ("127.0.0.1", 50000)}  # debug routes answer loopback peers


def two_markets() -> Config:
    # The crowd's 60 accounts are watched through one test client, so one address.
    return service_config(markets=[
        {"id": BTC, "base": "BTC", "pyth_feed_id": BTC_FEED},
        {"id": ETH, "base": "ETH", "pyth_feed_id": ETH_FEED},
    ], limits={"max_accounts_per_client": 1000})


PATHS = {BTC_FEED: [str(65000 + i % 7) for i in range(400)], ETH_FEED: [str(3400 + i % 5) for i in range(400)]}


def risky_store() -> FailingStore:
    store = FailingStore()
    store.put(stored(1, ALICE, is_long=True, size="1", collateral="1000", entry="65000"))
    store.put(stored(2, BOB, is_long=False, size="10", collateral="800", entry="3400", market_id=ETH))
    return store


async def wait_until(predicate: Callable[[], bool], *, step: float = 0.01, limit: float = 120.0) -> None:
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(step)


# Sixty watched accounts: more session crashes at once than the sessions
# supervisor tolerates (50 in 10 s).
CROWD = [to_checksum_address(f"0x{i:040x}") for i in range(1, 61)]


async def crash_every_session(registry: Registry, clients: Sequence[Recorder]) -> None:
    """Once every client of ``CROWD`` has its first update, crash each account's session."""
    for client in clients:
        await client.wait_for("positions_update")
    for user in CROWD:
        registry.fail_actor(session_name(user), "poisoned")


async def test_a_market_in_a_crash_loop_escalates_and_the_rest_keeps_serving(autojump_clock: trio.abc.Clock) -> None:
    store = risky_store()
    async with running_service(two_markets(), PATHS, store=store) as service:
        registry = service.system.registry
        install_health(service.context, feed_status=service.feed.status, indexer_status=None)
        http = service.app.test_client()
        paths = [f"/api/v1/ws/prices/{BTC}", f"/api/v1/ws/prices/{ETH}", "/api/v1/ws/liquidations",
                 f"/api/v1/ws/positions/{ALICE}"]
        async with recorders(service.app, *paths) as (btc, eth, liquidations, alice):
            for client, snapshot in zip((btc, eth, liquidations, alice),
                                        ("price_update", "price_update", "liquidation_alert", "positions_update")):
                await client.wait_for(snapshot)
            await trio.sleep(6)

            # The disk under BTC's store goes bad: the market fails, and every
            # restart fails in setup, until the markets supervisor gives up.
            store.fail_next[BTC] = MARKETS_INTENSITY.max_restarts
            failed_at = trio.current_time()
            registry.fail_actor(BTC_MARKET, "disk went away")

            await wait_until(lambda: store.failures == 1)
            await wait_until(lambda: node(registry.snapshot(), BTC_MARKET)["state"] == "backing_off")
            backing_off = node(registry.snapshot(), BTC_MARKET)
            assert backing_off["last_failure"]["type"] == "OperationalError"
            assert backing_off["restart_in"] > 0
            text = await (await http.get("/debug/actors?format=text", scope_base=LOOPBACK)).get_data(as_text=True)
            [line] = [l for l in text.splitlines() if l.strip().startswith(BTC_MARKET)]
            assert "backing_off" in line and "restart_in=" in line
            assert "last_failure=OperationalError: disk I/O error" in line
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert (f"actor {BTC_MARKET} is backing_off: OperationalError: disk I/O error"
                    in (await ready.get_json())["reasons"])
            assert node(registry.snapshot(), market_name(ETH))["restarts"] == 0  # one_for_one so far

            # More than 5 restarts within 30 s: the markets supervisor escalates,
            # and the root restarts the whole markets subtree (now healthy again).
            await wait_until(lambda: node(registry.snapshot(), "markets")["restarts"] == 1)
            escalated_at = trio.current_time()
            markets = node(registry.snapshot(), "markets")
            assert markets["last_failure"]["type"] == "RestartIntensityExceeded"
            assert repr(BTC_MARKET) in markets["last_failure"]["message"]
            # every restart waited out its backoff: 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s, ±20 %
            least = sum(RESTART_BACKOFF.initial * 2**k for k in range(5)) * (1 - RESTART_BACKOFF.jitter)
            assert least <= escalated_at - failed_at <= MARKETS_INTENSITY.within
            assert store.failures == MARKETS_INTENSITY.max_restarts

            await btc.wait_for("resync")
            await eth.wait_for("resync")
            fresh_btc = len(btc.of("price_update")) + 2
            await btc.wait_for("price_update", count=fresh_btc)
            await eth.wait_for("price_update", count=len(eth.of("price_update")) + 2)
            await trio.sleep(12)

        tree = registry.snapshot()
        for name in ("feed", "scanner", "sessions", "session-directory"):
            assert node(tree, name)["restarts"] == 0, name
        assert node(tree, "markets")["state"] == "running"
        assert (await http.get("/readyz")).status_code == 200

        # The market clients kept their connections: resync, then a fresh snapshot.
        for client in (btc, eth):
            assert client.closed_with is None
            assert client.seqs() == list(range(1, len(client.frames) + 1))
            after = client.types()[client.types().index("resync") + 1]
            assert after == "price_update"
        # The other streams never noticed beyond a late answer from the missing market.
        for client, kind, cadence in ((liquidations, "liquidation_alert", 5.0), (alice, "positions_update", 2.0)):
            assert client.closed_with is None and "resync" not in client.types()
            assert client.seqs() == list(range(1, len(client.frames) + 1))
            during = [t for t in client.times(kind) if t > failed_at]
            # a market that does not answer costs one request timeout (2 s) per market
            assert max(gaps(during)) <= cadence + 2 * 2.0 + 0.01, gaps(during)
            assert len(during) >= (trio.current_time() - failed_at) / (cadence + 4.0) - 1
        await service.system.stop()


async def test_a_market_broken_for_good_stops_the_daemon_past_the_root_intensity(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = risky_store()
    root_gave_up = pytest.RaisesExc(RestartIntensityExceeded, match="root: more than 3 restarts")
    with pytest.RaisesGroup(root_gave_up, flatten_subgroups=True):
        async with running_service(two_markets(), PATHS, store=store) as service:
            store.fail_next[BTC] = 10**6
            service.system.registry.fail_actor(BTC_MARKET, "disk went away")
            await trio.sleep_forever()
    # Four escalations of the markets subtree, each after six failures of BTC.
    assert store.failures == 4 * MARKETS_INTENSITY.max_restarts + 3


async def test_a_crashing_session_touches_no_other_user(autojump_clock: trio.abc.Clock) -> None:
    store = risky_store()
    store.put(stored(3, BOB, is_long=True, size="0.5", collateral="2000", entry="65000"))
    async with running_service(two_markets(), PATHS, store=store) as service:
        registry = service.system.registry
        alice_name = session_name(to_checksum_address(ALICE))
        bob_name = session_name(to_checksum_address(BOB))
        paths = [f"/api/v1/ws/positions/{ALICE}", f"/api/v1/ws/positions/{ALICE.upper().replace('0X', '0x')}",
                 f"/api/v1/ws/positions/{BOB}"]
        async with recorders(service.app, *paths) as (alice_tab, alice_phone, bob):
            for client in (alice_tab, alice_phone, bob):
                await client.wait_for("positions_update")
            crashes = 6
            for crash in range(crashes):
                await wait_until(lambda: node(registry.snapshot(), alice_name)["state"] == "running")
                registry.fail_actor(alice_name, f"poisoned #{crash}")
                await trio.sleep(1)
            await wait_until(lambda: node(registry.snapshot(), alice_name)["state"] == "running")
            for client in (alice_tab, alice_phone):
                await client.wait_for("resync", count=crashes)
                await client.wait_for("positions_update", count=len(client.of("positions_update")) + 1)
            await trio.sleep(4)

        tree = registry.snapshot()
        assert node(tree, alice_name)["restarts"] == crashes
        assert node(tree, bob_name)["restarts"] == 0 and node(tree, "sessions")["restarts"] == 0
        for client in (alice_tab, alice_phone):
            assert client.closed_with is None
            assert client.seqs() == list(range(1, len(client.frames) + 1))
            assert client.types().count("resync") == crashes
        # Bob's stream went on at its 2 s cadence, untouched.
        assert bob.closed_with is None and "resync" not in bob.types()
        assert bob.seqs() == list(range(1, len(bob.frames) + 1))
        assert set(gaps(bob.times("positions_update"))) == {2.0}
        assert {p["position_id"] for p in bob.of("positions_update")[-1]["positions"]} == {
            "0x" + f"{2:064x}", "0x" + f"{3:064x}"}
        await service.system.stop()


async def test_a_crash_storm_across_sessions_escalates_and_every_watcher_gets_a_session_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    """More session crashes than the sessions supervisor tolerates (50 in 10 s):
    it escalates, the root restarts it without its dynamic children, and the
    session directory starts the session of every account still watched."""
    async with running_service(two_markets(), PATHS, store=risky_store()) as service:
        registry = service.system.registry
        async with recorders(service.app, *(f"/api/v1/ws/positions/{u}" for u in CROWD)) as clients:
            await crash_every_session(registry, clients)
            await wait_until(lambda: node(registry.snapshot(), "sessions")["restarts"] == 1)
            assert node(registry.snapshot(), "sessions")["last_failure"]["type"] == "RestartIntensityExceeded"
            for client in clients:
                await client.wait_for("resync")
                await client.wait_for("positions_update", count=len(client.of("positions_update")) + 2)
        assert sorted(registry.lookup_supervisor("sessions").child_names()) == sorted(map(session_name, CROWD))
        for client in clients:
            assert client.closed_with is None and client.types().count("resync") == 1
            assert client.seqs() == list(range(1, len(client.frames) + 1))
            assert client.types()[client.types().index("resync") + 1] == "positions_update"
        await service.system.stop()


async def test_a_restarted_session_directory_keeps_serving_every_watched_account(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The directory owns the counts of who watches which account; when it
    restarts (a crash, or POST /debug/actors/session-directory/restart) it
    must not stop the sessions of accounts still being watched."""
    async with running_service(two_markets(), PATHS, store=risky_store()) as service:
        registry = service.system.registry
        sessions = lambda: sorted(registry.lookup_supervisor("sessions").child_names())  # noqa: E731
        alice, bob = session_name(to_checksum_address(ALICE)), session_name(to_checksum_address(BOB))
        async with recorders(service.app, f"/api/v1/ws/positions/{BOB}") as [bob_client]:
            async with recorders(service.app, f"/api/v1/ws/positions/{ALICE}") as [alice_client]:
                for client in (alice_client, bob_client):
                    await client.wait_for("positions_update")
                registry.fail_actor("session-directory", "rehearsal")
                await wait_until(lambda: node(registry.snapshot(), "session-directory")["restarts"] == 1)
                await trio.sleep(1)
                assert node(registry.snapshot(), "session-directory")["state"] == "running"
                for client in (alice_client, bob_client):
                    await client.wait_for("positions_update", count=len(client.of("positions_update")) + 2)
                assert sessions() == sorted([alice, bob])
            # Alice leaves: her session ends after the grace period, Bob's goes on.
            await trio.sleep(service.config.sessions.grace_s + 1.5)
            assert sessions() == [bob]
            await bob_client.wait_for("positions_update", count=len(bob_client.of("positions_update")) + 1)
        assert bob_client.closed_with is None
        assert bob_client.seqs() == list(range(1, len(bob_client.frames) + 1))
        await service.system.stop()


async def test_a_stream_that_cannot_be_attached_is_closed_not_left_empty(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(two_markets(), PATHS, store=risky_store()) as service:
        registry = service.system.registry
        async with recorders(service.app, *(f"/api/v1/ws/positions/{u}" for u in CROWD)) as clients:
            await crash_every_session(registry, clients)
            await wait_until(lambda: node(registry.snapshot(), "sessions")["state"] == "backing_off", step=0.001)
            async with recorders(service.app, f"/api/v1/ws/positions/{ALICE}") as [late]:
                error = await late.wait_for("error")
                assert error["code"] == "unavailable"
                await trio.sleep(10)
                assert late.closed_with == 1013, f"left open with: {late.types()}"  # try again later
                assert late.types() == ["error", "goodbye"]
        await service.system.stop()


async def test_one_users_crashing_session_does_not_make_the_daemon_unready(autojump_clock: trio.abc.Clock) -> None:
    async with running_service(two_markets(), PATHS, store=risky_store()) as service:
        registry = service.system.registry
        install_health(service.context, feed_status=service.feed.status, indexer_status=None)
        http = service.app.test_client()
        alice = session_name(to_checksum_address(ALICE))
        async with recorders(service.app, f"/api/v1/ws/positions/{ALICE}") as [client]:
            await client.wait_for("positions_update")
            assert (await http.get("/readyz")).status_code == 200
            registry.fail_actor(alice, "poisoned")
            await wait_until(lambda: node(registry.snapshot(), alice)["state"] == "backing_off")
            response = await http.get("/readyz")
            assert response.status_code == 200, await response.get_json()
        await service.system.stop()
