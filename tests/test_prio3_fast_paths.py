"""Vectorised fast paths of mpc.prio3 against their general twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.field import Field64, Field64Small, Field128, Field128Limbs
from mpc.errors import InvalidMeasurement
from mpc.prio3.circuits import SumVec


@pytest.mark.parametrize("field", [Field64, Field64Small, Field128, Field128Limbs], ids=lambda f: f.__name__)
def test_sumvec_machine_int_encoding_matches_the_general_one(field) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=30, deadline=None)
    @given(st.sampled_from([1, 2, 5, 255, 256, 1000, 2**32 - 1]), st.data())
    def check(max_measurement, data):  # type: ignore[no-untyped-def]
        length = data.draw(st.integers(1, 12))
        circuit = SumVec(field, length, max_measurement, 3)
        vals = data.draw(st.lists(st.integers(0, max_measurement), min_size=length, max_size=length))
        general = circuit.encode(np.array(vals, dtype=object))  # object dtype: the per-entry path
        for fast_input in (vals, np.array(vals, dtype=np.int64), np.array(vals, dtype=np.uint64)):
            assert field.to_ints(circuit.encode(fast_input)) == field.to_ints(general)

    check()


def test_sumvec_machine_int_encoding_of_bools() -> None:
    circuit = SumVec(Field128, 4, 1, 2)
    assert Field128.to_ints(circuit.encode(np.array([True, False, True, True]))) == [1, 0, 1, 1]


@pytest.mark.parametrize(
    "bad",
    [
        np.array([0, 256, 3], dtype=np.int64),  # above max
        np.array([0, -1, 3], dtype=np.int64),  # negative
        np.array([0, 2**64 - 1, 3], dtype=np.uint64),  # wraps negative in int64: still rejected
        np.array([0.0, 1.0, 3.0]),  # floats take the general path and are refused there
        [0, 1.5, 3],
    ],
    ids=["above-max", "negative", "huge-uint64", "float-array", "float-entry"],
)
def test_sumvec_encoding_rejects_out_of_range_and_non_integers(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidMeasurement):
        SumVec(Field128, 3, 255, 2).encode(bad)
