"""How the leader's job driver sizes its jobs (pure decisions; the jobs themselves run in tests/e2e)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinmpc.services.aggregator.config import Limits
from twinmpc.services.aggregator.leader_jobs import INGEST_QUIET_SECONDS, MIN_SPLIT_JOB_SIZE, LeaderJobs


def _driver(**limits) -> LeaderJobs:
    state = SimpleNamespace(config=SimpleNamespace(limits=Limits(**limits)))
    return LeaderJobs(state, tasks=None, peers=None)  # type: ignore[arg-type]


def _uploaded(jobs: LeaderJobs, stored: int, *, quiet: bool = False) -> None:
    """One upload call that stored `stored` reports; `quiet`: it ended long enough ago for extra slots."""
    jobs.upload_started()
    jobs.upload_ended(stored)
    if quiet:
        jobs._last_upload = time.monotonic() - 2 * INGEST_QUIET_SECONDS


def test_a_small_backlog_is_split_over_the_slots_once_uploads_pause():
    jobs = _driver(concurrent_jobs=3, job_size=1000)
    _uploaded(jobs, 300)
    assert jobs._next_job_size() == 300  # an upload just ended: one job, the loop keeps acknowledging
    jobs._last_upload -= 2 * INGEST_QUIET_SECONDS
    assert jobs._next_job_size() == 100


def test_a_running_upload_call_keeps_one_slot_and_sizes_for_it():
    jobs = _driver(concurrent_jobs=2, job_size=1000)
    _uploaded(jobs, 600, quiet=True)
    jobs.upload_started()  # a call in flight counts as ingesting however long ago the last one ended
    assert jobs._ingesting() and jobs._next_job_size() == 600


def test_a_large_or_unknown_backlog_goes_in_full_jobs():
    jobs = _driver(concurrent_jobs=2, job_size=1000)
    assert jobs._next_job_size() == 1000  # nothing stored by this process: another worker's or a restart's reports
    _uploaded(jobs, 50_000, quiet=True)
    assert jobs._next_job_size() == 1000


def test_an_upload_that_stored_nothing_does_not_wake_the_driver():
    jobs = _driver()
    _uploaded(jobs, 0)
    assert not jobs._wakeup.is_set() and jobs._unclaimed == 0
    _uploaded(jobs, 5)
    assert jobs._wakeup.is_set() and jobs._unclaimed == 5


@given(backlog=st.integers(1, 10**6), slots=st.integers(1, 64), job_size=st.integers(1, 100_000))
def test_split_sizes_stay_within_bounds_and_cover_the_backlog(backlog, slots, job_size):
    jobs = _driver(job_size=job_size)
    size = jobs._split(backlog, slots)
    assert min(MIN_SPLIT_JOB_SIZE, job_size) <= size <= job_size
    assert size * slots >= min(backlog, job_size * slots)  # the slots together take the backlog (up to full jobs)


@pytest.mark.parametrize("backlog, slots, expected", [(1000, 2, 500), (1001, 2, 501), (150, 3, 100), (10, 2, 100)])
def test_split_examples(backlog, slots, expected):
    assert _driver(job_size=2000)._split(backlog, slots) == expected
