"""Output policy: pure post-processing of released results."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.measurements import Count, FixedPointVec, Histogram, Mean, Sum
from twinmpc.mpc.output_policy import OutputPolicy


def test_clamp_count_to_feasible_range():
    policy = OutputPolicy(clamp=True)
    assert policy.apply(Count(), -3, 10) == 0
    assert policy.apply(Count(), 14, 10) == 10
    assert policy.apply(Histogram(3), [-1, 4, 99], 10) == [0, 4, 10]
    assert policy.apply(Sum(4), 200, 10) == 150


def test_mean_and_fixed_point_clamped():
    policy = OutputPolicy(clamp=True)
    assert policy.apply(Mean(8), {"mean": -2.0, "sum": -4, "count": 2}, 2)["mean"] == 0.0
    assert policy.apply(FixedPointVec(2, 16, 1.0), [5.0, -0.5], 3) == [3.0, -0.5]


def test_no_policy_is_identity():
    assert OutputPolicy().apply(Count(), -3, 10) == -3


@given(st.integers(-10**6, 10**6), st.integers(1, 1000))
def test_rounding_gives_nearest_multiple(value, step):
    out = OutputPolicy(round_to=step).apply(Sum(40), value, 1)
    assert out % step == 0
    assert abs(out - value) <= step / 2


@pytest.mark.parametrize("doc,needle", [({"round_to": 0}, "round_to"), ({"clamp": "yes"}, "clamp"), ({"floor": 1}, "floor"), ([], "table")])
def test_bad_policy_rejected(doc, needle):
    with pytest.raises(InvalidTask, match=needle):
        OutputPolicy.from_dict(doc)
