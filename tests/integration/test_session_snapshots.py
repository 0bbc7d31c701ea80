"""A session's ``positions_update`` never shows a state older than an event it relayed.

The session asks its markets one after another; a market that answers and
then applies an event (and tells the session) must not have its old answer
published after that event. Two scripted markets on the virtual clock make
the interleaving exact: the first answers at once, the second takes half a
second, and the first changes the position in between.
"""

from __future__ import annotations

import json
from decimal import Decimal

import trio

from actors import Actor, ActorContext, ChildSpec, Supervisor, open_system
from perpstream.history import StreamHistory
from perpstream.clock import WallClock
from perpstream.protocol import Channel, LiquidationWarning, PositionView
from perpstream.services.messages import GetUserPositions, UserPositions
from perpstream.services.session import SessionSettings, UserSessionActor
from perpstream.services.topics import StreamPublisher, market_name, session_name
from perpstream.streams import StreamKey

ACCOUNT = "0x" + "ab" * 20
FAST, SLOW = "fast-usdc-perp", "slow-usdc-perp"


def view(market_id: str, size: str) -> PositionView:
    return PositionView(
        position_id="0x" + "01" * 32, market_id=market_id, side="long", size=Decimal(size),
        entry_price=Decimal("100"), mark_price=None, collateral=Decimal("10"), unrealized_pnl=None,
        funding_owed=None, equity=None, leverage=None, health_factor=None, liquidation_price=None,
    )


class ScriptedMarket(Actor):
    """Answers with its one position's current size, after ``delay_s``."""

    def __init__(self, market_id: str, delay_s: float) -> None:
        self.market_id = market_id
        self.delay_s = delay_s
        self.size = "1"
        self.answered = trio.Event()

    async def setup(self, ctx: ActorContext) -> None:
        self.nursery = ctx.nursery

    async def handle(self, msg: object) -> None:
        assert isinstance(msg, GetUserPositions)
        answer = UserPositions(self.market_id, (view(self.market_id, self.size),))

        async def reply_later() -> None:
            await trio.sleep(self.delay_s)
            msg.reply.send(answer)
            self.answered.set()

        self.nursery.start_soon(reply_later)


async def test_a_round_gathered_across_an_event_is_gathered_again(autojump_clock: trio.abc.Clock) -> None:
    fast, slow = ScriptedMarket(FAST, 0.0), ScriptedMarket(SLOW, 0.5)
    settings = SessionSettings(positions_interval_ms=2000)
    clock = WallClock()
    history = StreamHistory.in_memory(size=10, ttl_s=60, now_ms=clock.now_ms)
    session = UserSessionActor(ACCOUNT, markets=[FAST, SLOW], settings=settings, clock=clock, history=history)
    root = Supervisor.spec("root", [
        ChildSpec(market_name(FAST), lambda: fast),
        ChildSpec(market_name(SLOW), lambda: slow),
        ChildSpec(session_name(ACCOUNT), lambda: session),
    ])
    async with open_system(root) as system:
        topics = StreamPublisher.of(system.registry, StreamKey(Channel.POSITIONS, ACCOUNT), settings.event_buffer, history)
        snapshots = topics.topics.snapshots

        def fast_size() -> str:
            assert snapshots.latest is not None
            data = json.loads(snapshots.latest.json())
            [position] = [p for p in data["positions"] if p["market_id"] == FAST]
            return str(position["size"])

        assert session.updates == 1 and fast_size() == "1"
        fast.answered = trio.Event()
        await fast.answered.wait()  # a periodic round is half-way: the slow market is still to answer

        # The fast market changes the position and publishes an event on the stream, as a market does.
        fast.size = "2"
        event = LiquidationWarning(position_id="0x" + "01" * 32, market_id=FAST, health_factor=Decimal("1.1"),
                                   liquidation_price=Decimal("90"), mark_price=Decimal("95"), severity="warning")
        topics.publish_event(event, clock.now_ms())
        await trio.sleep(0.6)  # the slow answer is in; the stale round was not published
        assert session.updates == 1
        await trio.sleep(0.5)  # the round gathered again
        assert session.updates == 2 and fast_size() == "2"
        await system.stop()
