"""The daemon's GC policy: young collections automatic, full ones on a timer."""

import gc

import pytest
import trio

from perpstream import gc_policy


async def test_full_collections_run_on_the_timer_and_settings_are_restored(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = gc.get_threshold()
    full_collections: list[float] = []
    real_collect = gc.collect

    def counting_collect(generation: int = 2) -> int:
        if generation == 2:
            full_collections.append(trio.current_time())
        return real_collect(generation)

    monkeypatch.setattr(gc, "collect", counting_collect)
    with trio.move_on_after(35):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gc_policy.run_gc_policy, 10.0)
            await trio.sleep(1)
            assert gc.get_threshold()[2] > 1_000_000, "no automatic full collections"
            assert gc.get_freeze_count() > 0, "start-up objects are frozen"
    assert full_collections == [0.0, 10.0, 20.0, 30.0]  # the freeze's own, then one per interval
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
