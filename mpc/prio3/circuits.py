"""Validity circuits of draft-irtf-cfrg-vdaf-18 Section 7.4.

`Count`, `Sum`, `SumVec`, `Histogram`, `MultihotCountVec`; their range checks
(encodings and bit-check wires) are in mpc/prio3/range_check.py, our
`FixedPointBoundedL2Vec` in mpc/prio3/bounded_l2.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from twinmpc.crypto.field import _PrimeField
from twinmpc.mpc.errors import InvalidMeasurement
from twinmpc.mpc.prio3.flp import Mul, ParallelSum, PolyEval, Valid
from twinmpc.mpc.prio3.range_check import (
    RangeCheckRows,
    encode_range_checked,
    range_checked_weights,
    weighted_decode,
)


def _as_int(x: object, what: str) -> int:
    """Measurements are ints (bools allowed for 0/1 vectors, as in the draft's vectors)."""
    if isinstance(x, (bool, np.bool_, int, np.integer)):
        return int(x)
    raise InvalidMeasurement(f"{what} must be an integer, got {type(x).__name__}")


class Count(Valid[int, int]):
    """Draft Section 7.4.1: C(x) = x*x - x with one Mul call."""

    MEAS_LEN = 1
    JOINT_RAND_LEN = 0
    OUTPUT_LEN = 1
    EVAL_OUTPUT_LEN = 1

    def __init__(self, field: type[_PrimeField]) -> None:
        self.field = field
        self.GADGETS = [Mul()]
        self.GADGET_CALLS = [1]

    def wire_inputs(self, meas: np.ndarray, joint_rand: np.ndarray, num_shares: int) -> list[np.ndarray]:
        return [np.stack([meas[:1], meas[:1]])]

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        return self.field.sub(gadget_outputs[0], meas[:1])

    def wire_inputs_rows(self, field, meas, joint_rand, num_shares):  # type: ignore[no-untyped-def]
        return [np.stack([meas[:, :1], meas[:, :1]], axis=1)]

    def wire_evals_rows(self, field, meas, joint_rand, num_shares, weights):  # type: ignore[no-untyped-def]
        x = field.mul(meas[:, :1], weights[0][:, :1])
        return [np.concatenate([x, x], axis=1)]

    def combine_rows(self, field, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        return field.sub(gadget_outputs[0], meas[:, :1])

    def truncate_rows(self, field, meas):  # type: ignore[no-untyped-def]
        return meas

    def encode(self, measurement: int) -> np.ndarray:
        m = _as_int(measurement, "Count measurement")
        if m not in (0, 1):
            raise InvalidMeasurement("Count measurement must be 0 or 1")
        return self.field.from_ints([m])

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return meas

    def decode(self, output: np.ndarray, num_measurements: int) -> int:
        return self.field.to_ints(output)[0]


class Sum(Valid[int, int]):
    """Draft-18 Section 7.4.2: range-checked integer in [0, max_measurement], PolyEval(x^2 - x) per digit."""

    JOINT_RAND_LEN = 0
    OUTPUT_LEN = 1

    def __init__(self, field: type[_PrimeField], max_measurement: int) -> None:
        if max_measurement < 1 or max_measurement >= field.MODULUS:
            raise ValueError("max_measurement must be in [1, p)")
        self.field = field
        self.max_measurement = max_measurement
        self.weights = range_checked_weights(max_measurement)
        self.bits = len(self.weights)
        self.GADGETS = [PolyEval([0, -1, 1])]
        self.GADGET_CALLS = [self.bits]
        self.MEAS_LEN = self.bits
        self.EVAL_OUTPUT_LEN = self.bits

    def wire_inputs(self, meas, joint_rand, num_shares):  # type: ignore[no-untyped-def]
        return [meas.reshape(1, -1)]

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        return gadget_outputs[0]

    def wire_inputs_rows(self, field, meas, joint_rand, num_shares):  # type: ignore[no-untyped-def]
        return [meas.reshape(meas.shape[0], 1, -1)]

    def wire_evals_rows(self, field, meas, joint_rand, num_shares, weights):  # type: ignore[no-untyped-def]
        return [field.mul_sum(meas, weights[0], axis=-1).reshape(-1, 1)]

    def combine_rows(self, field, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        return gadget_outputs[0]

    def truncate_rows(self, field, meas):  # type: ignore[no-untyped-def]
        return weighted_decode(field, meas, self.weights).reshape(-1, 1)

    def encode(self, measurement: int) -> np.ndarray:
        return self.field.from_ints(encode_range_checked(_as_int(measurement, "Sum measurement"), self.max_measurement))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return weighted_decode(self.field, meas, self.weights)

    def decode(self, output: np.ndarray, num_measurements: int) -> int:
        return self.field.to_ints(output)[0]


class SumVec(RangeCheckRows, Valid[list[int], list[int]]):
    """Draft-18 Section 7.4.3: each entry range-checked in [0, max_measurement]."""

    EVAL_OUTPUT_LEN = 1

    def __init__(self, field: type[_PrimeField], length: int, max_measurement: int, chunk_length: int) -> None:
        if length < 1 or chunk_length < 1:
            raise ValueError("length and chunk_length must be positive")
        if max_measurement < 1 or max_measurement >= field.MODULUS:
            raise ValueError("max_measurement must be in [1, p)")
        self.field = field
        self.length = length
        self.max_measurement = max_measurement
        self.chunk_length = chunk_length
        self.weights = range_checked_weights(max_measurement)
        self.bits = len(self.weights)
        self.MEAS_LEN = length * self.bits
        self.OUTPUT_LEN = length
        calls = -(-self.MEAS_LEN // chunk_length)
        self.GADGETS = [ParallelSum(Mul(), chunk_length)]
        self.GADGET_CALLS = [calls]
        self.JOINT_RAND_LEN = calls
        self.STREAM_UNIT = self.bits  # one output per `bits` digits; combine reads only the gadget

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        return self.field.sum(gadget_outputs[0], axis=-1)

    def truncate_block(self, field, block):  # type: ignore[no-untyped-def]
        return weighted_decode(field, block.reshape(-1, self.bits), self.weights)

    def combine_rows(self, field, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        return field.sum(gadget_outputs[0], axis=-1).reshape(-1, 1)

    def encode(self, measurement: Sequence[int]) -> np.ndarray:
        if len(measurement) != self.length:
            raise InvalidMeasurement(f"SumVec measurement must have length {self.length}")
        arr = np.asarray(measurement)
        if arr.shape == (self.length,) and arr.dtype.kind in "biu" and self.max_measurement < 2**63:
            return self.field.from_u64(self._digits(arr, np.uint64).reshape(-1))
        vals = [_as_int(v, "SumVec entry") for v in measurement]
        if any(not 0 <= v <= self.max_measurement for v in vals):
            raise InvalidMeasurement(f"SumVec entry outside [0, {self.max_measurement}]")
        arr = np.array(vals, dtype=object)
        half = (1 << (self.bits - 1)) - 1
        top = arr > half
        low = np.where(top, arr - self.weights[-1], arr)
        low_bits = (low[:, None] >> np.arange(self.bits - 1, dtype=object)[None, :]) & 1
        digits = np.concatenate([low_bits, top.astype(object).reshape(-1, 1) * 1], axis=1)
        return self.field.from_ints(digits.reshape(-1).tolist())

    def encode_bits(self, measurement: Sequence[int]) -> np.ndarray | None:
        """The digits of `encode` as uint8 (the native range-check prover takes them as they are)."""
        if not self.field.NATIVE:
            return None
        if len(measurement) != self.length:
            raise InvalidMeasurement(f"SumVec measurement must have length {self.length}")
        arr = np.asarray(measurement)
        if arr.shape != (self.length,) or arr.dtype.kind not in "biu" or self.max_measurement >= 2**63:
            return None  # Python ints beyond machine words: `encode` checks and encodes them
        return self._digits(arr, np.uint8).reshape(-1)

    def _digits(self, arr: np.ndarray, dtype: type) -> np.ndarray:
        """The digits of `encode`, (length, bits) of `dtype`, vectorised for integer/bool arrays
        (values < 2^63)."""
        v = arr.astype(np.int64)  # uint64 values >= 2^63 wrap negative and are rejected like any > max
        if v.min() < 0 or v.max() > self.max_measurement:
            raise InvalidMeasurement(f"SumVec entry outside [0, {self.max_measurement}]")
        top = v > (1 << (self.bits - 1)) - 1
        low = np.where(top, v - self.weights[-1], v).astype(np.uint64)
        digits = np.empty((v.shape[0], self.bits), dtype=dtype)  # filled in place: no joined copies
        np.right_shift(low[:, None], np.arange(self.bits - 1, dtype=np.uint64)[None, :], out=digits[:, :-1],
                       casting="unsafe")
        digits[:, :-1] &= 1
        digits[:, -1] = top
        return digits

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return weighted_decode(self.field, meas.reshape(self.length, self.bits), self.weights)

    def truncate_rows(self, field, meas):  # type: ignore[no-untyped-def]
        return weighted_decode(field, meas.reshape(-1, self.length, self.bits), self.weights)

    def decode(self, output: np.ndarray, num_measurements: int) -> list[int]:
        return self.field.to_ints(output)


class Histogram(RangeCheckRows, Valid[int, list[int]]):
    """Draft Section 7.4.4: one-hot vector; bit check plus sum-to-one check."""

    EVAL_OUTPUT_LEN = 2

    def __init__(self, field: type[_PrimeField], length: int, chunk_length: int) -> None:
        if length < 1 or chunk_length < 1:
            raise ValueError("length and chunk_length must be positive")
        self.field = field
        self.length = length
        self.chunk_length = chunk_length
        calls = -(-length // chunk_length)
        self.GADGETS = [ParallelSum(Mul(), chunk_length)]
        self.GADGET_CALLS = [calls]
        self.MEAS_LEN = length
        self.OUTPUT_LEN = length
        self.JOINT_RAND_LEN = calls

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        f = self.field
        range_check = f.sum(gadget_outputs[0], axis=-1)
        sum_check = f.sub(f.sum(meas, axis=-1), self.shares_inv(num_shares))
        return self.field.concat([range_check, sum_check])

    def combine_rows(self, field, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        range_check = field.sum(gadget_outputs[0], axis=-1)
        sum_check = field.sub(field.sum(meas, axis=-1), self.shares_inv(num_shares, field))
        return field.stack([range_check, sum_check], axis=1)

    def encode(self, measurement: int) -> np.ndarray:
        m = _as_int(measurement, "Histogram measurement")
        if not 0 <= m < self.length:
            raise InvalidMeasurement(f"Histogram bucket must be in [0, {self.length})")
        return self.field.from_u64((np.arange(self.length) == m).astype(np.uint64))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return meas

    def truncate_rows(self, field, meas):  # type: ignore[no-untyped-def]
        return meas

    def decode(self, output: np.ndarray, num_measurements: int) -> list[int]:
        return self.field.to_ints(output)


class MultihotCountVec(RangeCheckRows, Valid[list[int], list[int]]):
    """Draft-18 Section 7.4.5: bit vector whose weight is at most max_weight.

    The claimed weight is a range-checked integer in [0, max_weight] (same
    encoding as `Sum`); the circuit checks all bits and that the claimed
    weight equals the sum of the entries.
    """

    EVAL_OUTPUT_LEN = 2

    def __init__(self, field: type[_PrimeField], length: int, max_weight: int, chunk_length: int) -> None:
        if length < 1 or chunk_length < 1:
            raise ValueError("length and chunk_length must be positive")
        if not 0 < max_weight <= length:
            raise ValueError("max_weight must be in [1, length]")
        if length >= field.MODULUS:
            raise ValueError("length too large for the field")
        self.field = field
        self.length = length
        self.max_weight = max_weight
        self.chunk_length = chunk_length
        self.weight_weights = range_checked_weights(max_weight)
        self.bits_for_weight = len(self.weight_weights)
        self.MEAS_LEN = length + self.bits_for_weight
        self.OUTPUT_LEN = length
        calls = -(-self.MEAS_LEN // chunk_length)
        self.GADGETS = [ParallelSum(Mul(), chunk_length)]
        self.GADGET_CALLS = [calls]
        self.JOINT_RAND_LEN = calls

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        f = self.field
        range_check = f.sum(gadget_outputs[0], axis=-1)
        weight = f.sum(meas[: self.length], axis=-1)
        reported = weighted_decode(f, meas[self.length :], self.weight_weights)
        return f.concat([range_check, f.sub(weight, reported)])

    def combine_rows(self, field, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        range_check = field.sum(gadget_outputs[0], axis=-1)
        weight = field.sum(meas[:, : self.length], axis=-1)
        reported = weighted_decode(field, meas[:, self.length :], self.weight_weights)
        return field.stack([range_check, field.sub(weight, reported)], axis=1)

    def encode(self, measurement: Sequence[int]) -> np.ndarray:
        if len(measurement) != self.length:
            raise InvalidMeasurement(f"MultihotCountVec measurement must have length {self.length}")
        vals = [_as_int(v, "MultihotCountVec entry") for v in measurement]
        if any(v not in (0, 1) for v in vals):
            raise InvalidMeasurement("MultihotCountVec entries must be 0 or 1")
        weight = sum(vals)
        if weight > self.max_weight:
            raise InvalidMeasurement(f"weight {weight} exceeds max_weight {self.max_weight}")
        return self.field.from_ints(vals + encode_range_checked(weight, self.max_weight))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return meas[: self.length]

    def truncate_rows(self, field, meas):  # type: ignore[no-untyped-def]
        return meas[:, : self.length]

    def decode(self, output: np.ndarray, num_measurements: int) -> list[int]:
        return self.field.to_ints(output)


__all__ = [
    "Count",
    "Histogram",
    "MultihotCountVec",
    "Sum",
    "SumVec",
]
