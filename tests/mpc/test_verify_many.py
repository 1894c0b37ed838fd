"""mpc.aggregator.verify_init_many / verifier_messages on real tasks (TwinRing64 and Prio3):
the same results, report by report, as the single-report role functions."""

from __future__ import annotations

import pytest

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.client import shard_report
from twinmpc.mpc.errors import InvalidReport
from tests.helpers import make_task

CASES = [
    ("twinring64", {"type": "histogram", "buckets": 4}, [0, 3, 1]),
    ("twinring64", {"type": "sum", "bits": 8}, [0, 255, 7]),
    ("prio3", {"type": "sum", "bits": 16}, [0, 65535, 1234]),
    ("prio3", {"type": "histogram", "buckets": 5}, [4, 0, 2]),
]


def _single(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except InvalidReport as exc:
        return exc


@pytest.mark.parametrize("vdaf, measurement, values", CASES, ids=lambda c: str(c))
def test_verify_many_matches_report_by_report(vdaf: str, measurement: dict, values: list[int]) -> None:
    kit = make_task(measurement, 2, vdaf=vdaf)
    task = kit.task
    reports = [shard_report(task, v, time=1_700_000_000) for v in values]
    opened = [[agg.open_input_share(task, kp, j, r) for r in reports] for j, kp in enumerate(kit.agg_keys)]
    opened[1][1] = opened[1][1][:-1]  # one malformed member: refused alone
    per_agg = []
    for j in range(2):
        ids = [r.report_id for r in reports]
        many = agg.verify_init_many(task, kit.verify_key, j, ids, [r.public_share for r in reports], opened[j])
        for b, r in enumerate(reports):
            one = _single(agg.verify_init, task, kit.verify_key, j, r.report_id, r.public_share, opened[j][b])
            if isinstance(one, InvalidReport):
                assert type(many[b]) is type(one) and str(many[b]) == str(one)
            else:
                assert many[b][1] == one[1]
        per_agg.append(many)
    assert isinstance(per_agg[1][1], InvalidReport) and not isinstance(per_agg[0][1], InvalidReport)
    lists = [[per_agg[0][b][1], per_agg[1][b][1]] for b in (0, 2)] + [[per_agg[0][0][1]]]  # last: a share missing
    messages = agg.verifier_messages(task, lists)
    for got, shares in zip(messages, lists, strict=True):
        want = _single(agg.verifier_message, task, shares)
        if isinstance(want, InvalidReport):
            assert type(got) is type(want) and str(got) == str(want)
        else:
            assert got == want
    assert isinstance(messages[2], InvalidReport)
    acc = agg.Accumulator(task)
    for b, m in ((0, messages[0]), (2, messages[1])):
        acc.add([reports[b].report_id], [agg.verify_finish(task, per_agg[0][b][0], m)])
    assert acc.count == 2


def test_verify_many_rejects_mismatched_lengths() -> None:
    kit = make_task({"type": "count"}, 2)
    with pytest.raises(ValueError):
        agg.verify_init_many(kit.task, kit.verify_key, 0, [b"\x00" * 16], [], [b""])
