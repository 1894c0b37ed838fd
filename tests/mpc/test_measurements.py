"""Measurement types (mpc.measurements): client-side validation of every type,
parameter parsing, encoded lengths and signed decoding of noised aggregates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twinmpc.crypto import ring
from twinmpc.mpc.errors import InvalidMeasurement, InvalidTask
from twinmpc.mpc.measurements import (
    MAX_BITS,
    MAX_VECTOR_LENGTH,
    Count,
    FixedPointVec,
    Histogram,
    Mean,
    Sum,
    SumVec,
    measurement_from_params,
)

M = ring.MODULUS


# --- valid encodings -------------------------------------------------------------
def test_count() -> None:
    c = Count()
    assert c.length == 1
    assert c.encode(0).tolist() == [0] and c.encode(1).tolist() == [1]
    assert c.encode(True).tolist() == [1] and c.encode(False).tolist() == [0]
    assert c.encode(np.int64(1)).tolist() == [1]


def test_sum_and_mean() -> None:
    assert Sum(8).encode(255).tolist() == [255]
    assert Mean(8).encode(0).tolist() == [0]
    assert Mean(4).decode(ring.from_ints([30]), 4) == {"mean": 7.5, "sum": 30, "count": 4}
    assert math.isnan(Mean(4).decode(ring.zeros(1), 0)["mean"])


def test_histogram_is_one_hot() -> None:
    assert Histogram(4).encode(2).tolist() == [0, 0, 1, 0]
    assert Histogram(1).encode(0).tolist() == [1]


def test_sumvec_accepts_lists_arrays_and_bools() -> None:
    s = SumVec(3, 4)
    assert s.encode([0, 15, 3]).tolist() == [0, 15, 3]
    assert s.encode(np.array([1, 2, 3], dtype=np.uint8)).tolist() == [1, 2, 3]
    assert s.encode(np.array([True, False, True])).tolist() == [1, 0, 1]
    big = SumVec(2, MAX_BITS)
    assert big.encode([(1 << MAX_BITS) - 1, 0]).tolist() == [(1 << MAX_BITS) - 1, 0]


def test_fixedpointvec() -> None:
    f = FixedPointVec(3, 8, 2.0)
    assert f.encode([1.0, -0.5, 9.0]).tolist() == [256, M - 128, 512]
    assert f.encode(np.array([0, 1, -1])).tolist() == [0, 256, M - 256]


# --- validation errors -------------------------------------------------------------
@pytest.mark.parametrize("bad", [2, -1, 1.0, 0.0, "1", None, [1], np.bool_(True), np.float64(1.0)])
def test_count_rejects(bad) -> None:
    with pytest.raises(InvalidMeasurement, match="count"):
        Count().encode(bad)


@pytest.mark.parametrize("cls", [Sum, Mean])
@pytest.mark.parametrize("bad", [256, -1, 1 << 70, True, False, 3.0, "3", None, [3], np.float32(1)])
def test_sum_rejects(cls, bad) -> None:
    with pytest.raises(InvalidMeasurement, match="sum"):
        cls(8).encode(bad)


@pytest.mark.parametrize("bad", [4, -1, 1 << 62, True, 1.0, "0", None, [0, 1]])
def test_histogram_rejects(bad) -> None:
    with pytest.raises(InvalidMeasurement, match="histogram bucket"):
        Histogram(4).encode(bad)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([1, 2], "expected 3 entries"),  # too short
        ([1, 2, 3, 4], "expected 3 entries"),  # too long
        ([[1, 2, 3]], "expected 3 entries"),  # wrong shape
        (5, "expected 3 entries"),  # scalar
        ([1, 16, 0], r"\[0, 2\^4\)"),  # out of range
        ([1, -1, 0], r"\[0, 2\^4\)"),  # negative
        ([1, 1 << 64, 0], r"\[0, 2\^4\)"),  # huge Python int (object dtype)
        ([1.0, 2.0, 3.0], "must be integers"),  # floats
        (["1", "2", "3"], "must be integers"),  # strings
        ([1, None, 3], "must be integers"),
        ([[1], [2, 3], 4], "not a vector|expected 3"),  # ragged
    ],
)
def test_sumvec_rejects(bad, match: str) -> None:
    with pytest.raises(InvalidMeasurement, match=match):
        SumVec(3, 4).encode(bad)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([1.0, 2.0], "expected 3 entries"),
        ([[1.0, 2.0, 3.0]], "expected 3 entries"),
        (1.0, "expected 3 entries"),
        ([0.0, math.nan, 0.0], "NaN or infinity"),
        ([0.0, math.inf, 0.0], "NaN or infinity"),
        (["a", "b", "c"], "not a vector of numbers"),
        (["1.0", "0.5", "2"], "not a vector of numbers"),  # numeric strings are still strings
        ([None, 1.0, 2.0], "not a vector of numbers"),
        ([1j, 0, 0], "not a vector of numbers"),
    ],
)
def test_fixedpointvec_rejects(bad, match: str) -> None:
    with pytest.raises(InvalidMeasurement, match=match):
        FixedPointVec(3, 8, 2.0).encode(bad)


# --- decoding of (noised) aggregates ------------------------------------------------------
def test_negative_aggregates_decode_negative() -> None:
    minus3 = ring.from_ints([-3])
    assert Count().decode(minus3, 10) == -3
    assert Sum(8).decode(minus3, 10) == -3
    assert Mean(8).decode(ring.from_ints([-20]), 10) == {"mean": -2.0, "sum": -20, "count": 10}
    assert Histogram(3).decode(ring.from_ints([-1, 5, -(1 << 62)]), 4) == [-1, 5, -(1 << 62)]
    assert SumVec(2, 8).decode(ring.from_ints([-7, 7]), 1) == [-7, 7]
    assert FixedPointVec(2, 4, 1.0).decode(ring.from_ints([-24, 8]), 1) == [-1.5, 0.5]


def test_decode_returns_python_types() -> None:
    assert type(Count().decode(ring.from_ints([2]), 2)) is int
    assert all(type(v) is int for v in Histogram(2).decode(ring.from_ints([1, 2]), 3))
    assert all(type(v) is float for v in FixedPointVec(2, 4, 1.0).decode(ring.from_ints([1, 2]), 1))


def test_sensitivity() -> None:
    assert Count().sensitivity() == (1, 1)
    assert Sum(4).sensitivity() == (15, 225)
    assert Histogram(9).sensitivity() == (1, 1)
    assert SumVec(3, 2).sensitivity() == (9, 27)
    assert FixedPointVec(4, 2, 1.5).sensitivity() == (24, 144)


# --- parameter blocks -------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"type": "count"},
        {"type": "sum", "bits": 16},
        {"type": "mean", "bits": 1},
        {"type": "histogram", "buckets": 12},
        {"type": "sumvec", "length": 1000, "bits": 8},
        {"type": "fixedpointvec", "length": 10, "frac_bits": 16, "clip": 1.5},
    ],
)
def test_params_round_trip(params: dict) -> None:
    m = measurement_from_params(params)
    assert m.params() == params
    assert measurement_from_params(m.params()) == m


def test_fixedpointvec_integer_clip_becomes_float() -> None:
    m = measurement_from_params({"type": "fixedpointvec", "length": 2, "frac_bits": 4, "clip": 2})
    assert m == FixedPointVec(2, 4, 2.0) and type(m.clip) is float


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"bits": 3}, "'type'"),
        ([("type", "count")], "'type'"),
        ({"type": "median"}, "unknown measurement type 'median'"),
        ({"type": "count", "bits": 1}, r"does not take \['bits'\]"),
        ({"type": "sum"}, r"needs \['bits'\]"),
        ({"type": "sum", "bits": 0}, "'bits'"),
        ({"type": "sum", "bits": MAX_BITS + 1}, "'bits'"),
        ({"type": "sum", "bits": True}, "'bits'"),
        ({"type": "sum", "bits": 8.0}, "'bits'"),
        ({"type": "mean", "bits": "8"}, "'bits'"),
        ({"type": "histogram", "buckets": 0}, "'buckets'"),
        ({"type": "histogram", "buckets": MAX_VECTOR_LENGTH + 1}, "'buckets'"),
        ({"type": "sumvec", "length": 4}, r"needs \['bits'\]"),
        ({"type": "sumvec", "length": -4, "bits": 2}, "'length'"),
        ({"type": "fixedpointvec", "length": 4, "frac_bits": 41, "clip": 1.0}, "'frac_bits'"),
        ({"type": "fixedpointvec", "length": 4, "frac_bits": 8, "clip": "1"}, "'clip'"),
        ({"type": "fixedpointvec", "length": 4, "frac_bits": 8, "clip": True}, "'clip'"),
        ({"type": "fixedpointvec", "length": 4, "frac_bits": 8, "clip": 0.0}, "clip"),
        ({"type": "fixedpointvec", "length": 4, "frac_bits": 8, "clip": math.nan}, "clip"),
        ({"type": "fixedpointvec", "length": 4, "frac_bits": 30, "clip": 2.0**40}, "2\\^62"),
    ],
)
def test_bad_params_raise_invalid_task(params, match: str) -> None:
    with pytest.raises(InvalidTask, match=match):
        measurement_from_params(params)
