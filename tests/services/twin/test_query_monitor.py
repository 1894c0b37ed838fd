"""The extraction monitor: a sweep is flagged and throttled, ordinary repeated queries are not."""

from __future__ import annotations

from fractions import Fraction

import pytest

from twinmpc.services.pki import Principal, Role
from twinmpc.services.twin.query_monitor import QueryMonitor, cell

SWEEPER = Principal("controller-x", Role.CONTROLLER)
NORMAL = Principal("controller-1", Role.CONTROLLER)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sweep_is_flagged_at_the_threshold_then_throttled() -> None:
    clock = Clock()
    mon = QueryMonitor(window_seconds=60, max_distinct_cells=10, cooldown_seconds=300, throttled_rate=Fraction(1, 10), clock=clock)
    verdicts = []
    for k in range(20):
        clock.now += 0.5
        verdicts.append(mon.observe(SWEEPER, cell(k % 24, False, 25 * k, 0, False, False)))
    assert all(v.allowed for v in verdicts[:9])
    assert not verdicts[9].allowed and verdicts[9].newly_flagged and verdicts[9].distinct_cells == 10
    assert sum(v.newly_flagged for v in verdicts) == 1  # audited once per flag
    assert not any(v.allowed for v in verdicts[10:])  # 1 query per 10 s: none in the next 5 s
    clock.now += 10
    assert mon.observe(SWEEPER, cell(3, False, 0, 0, False, False)).allowed  # throttled, not banned
    assert not mon.observe(SWEEPER, cell(3, False, 0, 0, False, False)).allowed
    clock.now += 301
    assert not mon.flagged(SWEEPER.identity)


def test_ordinary_controller_is_never_flagged() -> None:
    clock = Clock()
    mon = QueryMonitor(window_seconds=60, max_distinct_cells=10, clock=clock)
    for k in range(600):  # 20 intersections polled every 2 s for 10 minutes, slowly changing conditions
        clock.now += 0.1
        hour = 7 + k / 3600
        assert mon.observe(NORMAL, cell(hour, False, 120 + (k % 20) * 2, 80 + (k % 7), False, False)).allowed
    assert not mon.flagged(NORMAL.identity)


def test_identities_are_separate_and_parameters_checked() -> None:
    clock = Clock()
    mon = QueryMonitor(max_distinct_cells=3, clock=clock)
    for k in range(3):
        mon.observe(SWEEPER, cell(k, False, 0, 0, False, False))
    assert mon.flagged(SWEEPER.identity) and not mon.flagged(NORMAL.identity)
    assert mon.observe(NORMAL, cell(1, False, 0, 0, False, False)).allowed
    with pytest.raises(ValueError):
        QueryMonitor(max_distinct_cells=1)
