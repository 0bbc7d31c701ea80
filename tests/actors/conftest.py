"""Shared test actors for the actors package: a scriptable Probe and its log."""

from __future__ import annotations

from collections.abc import Callable, Collection

import attrs
import pytest
import trio

import actors


@attrs.frozen
class Entry:
    kind: str
    name: str
    incarnation: int
    at: float


class Log:
    """What the probes did, in order, with trio timestamps."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def add(self, kind: str, name: str, incarnation: int) -> None:
        self.entries.append(Entry(kind, name, incarnation, trio.current_time()))

    def of(self, *kinds: str) -> list[tuple[str, str, int]]:
        """(kind, name, incarnation) of the entries of the given kinds."""
        return [(e.kind, e.name, e.incarnation) for e in self.entries if e.kind in kinds]

    def times(self, kind: str, name: str) -> list[float]:
        return [e.at for e in self.entries if e.kind == kind and e.name == name]

    def clear(self) -> None:
        self.entries.clear()


class Probe(actors.Actor):
    """Records setup/ready/message/stop events and obeys scripted messages:

    ``"boom"`` raises ValueError; ``("sleep", s)`` takes ``s`` seconds to
    handle; ``("echo", x, reply)`` answers ``x``; ``("fail", exc, reply)``
    answers with ``exc``; ``("late-echo", s, x, reply)`` answers after ``s``
    seconds; ``"crash-helper"`` starts a helper task that raises; anything else
    is logged as ``msg``.
    """

    mailbox_capacity = 8

    def __init__(
        self,
        name: str,
        log: Log,
        *,
        setup_delay: float = 0.0,
        fail_setup: Collection[int] = (),
        stop_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.log = log
        self.setup_delay = setup_delay
        self.fail_setup = fail_setup
        self.stop_delay = stop_delay
        self.incarnation = 0
        self.handled: list[object] = []

    async def setup(self, ctx: actors.ActorContext) -> None:
        self.ctx = ctx
        self.incarnation = ctx.incarnation
        self.log.add("setup", self.name, self.incarnation)
        if ctx.incarnation in self.fail_setup:
            raise ValueError(f"{self.name} setup failed")
        await trio.sleep(self.setup_delay)
        self.log.add("ready", self.name, self.incarnation)

    async def handle(self, msg: object) -> None:
        match msg:
            case "boom":
                raise ValueError(f"{self.name} boom")
            case ("sleep", float(seconds)):
                self.log.add("handling", self.name, self.incarnation)
                await trio.sleep(seconds)
                self.log.add("handled", self.name, self.incarnation)
            case ("echo", value, actors.Reply() as reply):
                reply.send(value)
            case ("fail", BaseException() as error, actors.Reply() as reply):
                reply.fail(error)
            case ("late-echo", float(seconds), value, actors.Reply() as reply):
                await trio.sleep(seconds)
                reply.send(value)
                self.log.add("replied-late", self.name, self.incarnation)
            case "crash-helper":
                self.ctx.nursery.start_soon(self._crash)
            case _:
                self.handled.append(msg)
                self.log.add("msg", self.name, self.incarnation)

    async def _crash(self) -> None:
        await trio.sleep(0)
        raise KeyError("helper crashed")

    async def on_stop(self) -> None:
        self.log.add("stop", self.name, self.incarnation)
        await trio.sleep(self.stop_delay)
        self.log.add("stopped", self.name, self.incarnation)

    def describe(self) -> dict[str, object]:
        return {"handled": len(self.handled)}


ProbeSpec = Callable[..., actors.ChildSpec]


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def probe(log: Log) -> ProbeSpec:
    """``probe(name, restart=..., shutdown_timeout=..., **Probe options)``
    → a ChildSpec building a fresh Probe per incarnation, sharing ``log``."""

    def make(
        name: str,
        *,
        restart: actors.Restart = actors.Restart.PERMANENT,
        shutdown_timeout: float = 5.0,
        **options: object,
    ) -> actors.ChildSpec:
        return actors.ChildSpec(
            name,
            lambda: Probe(name, log, **options),  # type: ignore[arg-type]
            restart=restart,
            shutdown_timeout=shutdown_timeout,
        )

    return make

