"""The serving process's heap settings (services.aggregator.workers.settle_heap)."""

from __future__ import annotations

import gc

from twinmpc.services.aggregator.workers import SERVING_GC_THRESHOLD, settle_heap


def test_settle_heap_freezes_startup_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        settle_heap()
        assert gc.get_threshold() == SERVING_GC_THRESHOLD
        assert gc.get_freeze_count() > 0  # what startup built is out of every later collection
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cycles made while serving are still found
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
