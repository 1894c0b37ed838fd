"""Per-task retention: its default, its floor (the report expiry), the horizon it sets, and amendments."""

from __future__ import annotations

import pytest

from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.task import RETENTION_MARGIN_SECONDS, Task
from twinmpc.mpc.task_amendment import amend
from tests.helpers import make_task


def test_default_retention_is_the_report_expiry_plus_a_margin_and_is_not_written():
    task = make_task({"type": "count"}, report_expiry_seconds=3600).task
    assert task.retention == 3600 + RETENTION_MARGIN_SECONDS
    assert "retention_seconds" not in task.to_dict()
    explicit = make_task({"type": "count"}, report_expiry_seconds=3600, retention_seconds=7200).task
    assert explicit.retention == 7200 and Task.from_json(explicit.to_json()) == explicit


def test_retention_below_the_report_expiry_is_refused():
    # a forgotten report id must belong to a report the upload check refuses by its time
    with pytest.raises(InvalidTask, match="retention_seconds.*report_expiry_seconds"):
        make_task({"type": "count"}, report_expiry_seconds=3600, retention_seconds=3599)
    with pytest.raises(InvalidTask, match="retention_seconds"):
        make_task({"type": "count"}, retention_seconds="long")


def test_expired_before_is_the_start_of_the_window_holding_now_minus_retention():
    task = make_task({"type": "count"}, report_expiry_seconds=100, retention_seconds=150).task  # 60 s windows
    assert task.expired_before(1000) == 840  # windows starting before 840 ended at or before 850 = 1000 - 150


def test_retention_may_only_be_lowered_and_never_below_the_expiry():
    task = make_task({"type": "count"}, report_expiry_seconds=3600).task
    assert amend(task, {"retention_seconds": 4000}).retention == 4000
    with pytest.raises(InvalidTask, match="only be lowered"):
        amend(task, {"retention_seconds": task.retention + 1})
    with pytest.raises(InvalidTask, match="report_expiry_seconds"):
        amend(task, {"retention_seconds": 100})
