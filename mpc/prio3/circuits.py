"""Validity circuits of draft-irtf-cfrg-vdaf-18 Section 7.4 (and our L2 extension).

Draft circuits: `Count`, `Sum`, `SumVec`, `Histogram`, `MultihotCountVec`.
Ours: `FixedPointBoundedL2Vec` (see docs/prio3.md for its design).

Range-checked integers (draft-18, Section 7.4.2): an integer in [0, max] is
encoded as bits.bit_length(max) zero/one field elements with weights
1, 2, ..., 2^(bits-2), and a last weight max - (2^(bits-1) - 1), so that every
zero/one vector decodes into [0, max] and only bit checks are needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from twinmpc.crypto.field import _PrimeField
from twinmpc.crypto.poly import native_extend_plan
from twinmpc.mpc.errors import InvalidMeasurement
from twinmpc.mpc.prio3.flp import Mul, ParallelSum, PolyEval, Valid, zeros2


def range_checked_weights(max_value: int) -> list[int]:
    """Weights of the draft-18 range-checked encoding of [0, max_value]."""
    if max_value < 1:
        raise ValueError("max_value must be at least 1")
    bits = max_value.bit_length()
    return [1 << i for i in range(bits - 1)] + [max_value - ((1 << (bits - 1)) - 1)]


def encode_range_checked(value: int, max_value: int) -> list[int]:
    """Zero/one digits of value under `range_checked_weights(max_value)`."""
    if not 0 <= value <= max_value:
        raise InvalidMeasurement(f"value {value} outside [0, {max_value}]")
    bits = max_value.bit_length()
    last = max_value - ((1 << (bits - 1)) - 1)
    top = 0
    if value > (1 << (bits - 1)) - 1:
        top, value = 1, value - last
    return [(value >> i) & 1 for i in range(bits - 1)] + [top]


def _weighted_decode(field: type[_PrimeField], digits: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """Rows of digits (..., k) times weights -> (...,) field elements.

    With weights 1, 2, 4, ... (all but possibly the last) this is Horner's rule
    with doublings (additions only) plus one product for the last weight.
    """
    k = len(weights)
    if field.NATIVE:  # one compiled pass: a matrix (rows, k) times the weights, one reduction per row
        return field.mul_sum(np.ascontiguousarray(digits.reshape(-1, k)), field.from_ints(weights)).reshape(
            digits.shape[:-1] or (1,)
        )
    if k >= 2 and list(weights[:-1]) == [1 << i for i in range(k - 1)]:
        cols = digits.reshape(-1, k)  # keep 1-D operands (0-d numpy scalars warn on wrap-around)
        acc = cols[:, k - 2]
        for i in range(k - 3, -1, -1):
            acc = field.add(field.add(acc, acc), cols[:, i])
        out = field.add(acc, field.mul(cols[:, k - 1], field.const(weights[-1])))
        return out.reshape(digits.shape[:-1] or (1,))
    w = field.from_ints(weights)
    return field.sum(field.mul(digits, w), axis=-1)


def _as_int(x: object, what: str) -> int:
    """Measurements are ints (bools allowed for 0/1 vectors, as in the draft's vectors)."""
    if isinstance(x, (bool, np.bool_, int, np.integer)):
        return int(x)
    raise InvalidMeasurement(f"{what} must be an integer, got {type(x).__name__}")


def range_check_wires(
    field: type[_PrimeField], x: np.ndarray, joint_rand: np.ndarray, chunk: int, calls: int, shares_inv: np.ndarray
) -> np.ndarray:
    """Wires of ParallelSum(Mul, chunk) checking x in {0,1}^n (draft SumVec/Histogram circuit).

    Call i, slot j: inputs (r_i^(j+1) * x[i*chunk+j], x[i*chunk+j] - 1/num_shares),
    with x zero-padded to calls*chunk.  Shape (2*chunk, calls).
    """
    return range_check_wires_rows(field, x.reshape(1, -1), joint_rand.reshape(1, -1), chunk, calls, shares_inv)[0]


def range_check_wires_rows(
    field: type[_PrimeField], x: np.ndarray, joint_rand: np.ndarray, chunk: int, calls: int, shares_inv: np.ndarray
) -> np.ndarray:
    """`range_check_wires` for B reports (x (B, n), joint_rand (B, calls)) -> (B, 2*chunk, calls).

    The powers r_i^1 .. r_i^chunk grow by doubling the width, each step vectorised over all calls.
    """
    if field.NATIVE:  # one compiled pass, no padded copy or power table
        return field.range_wires(x, joint_rand, chunk, calls, shares_inv)  # type: ignore[attr-defined]
    b = x.shape[0]
    padded = field.zeros_shape((b, calls * chunk))
    padded[:, : x.shape[1]] = x
    xs = padded.reshape(b, calls, chunk)
    r_pows = joint_rand.reshape(b, calls, 1)
    while r_pows.shape[2] < chunk:
        have = r_pows.shape[2]
        more = min(have, chunk - have)
        r_pows = np.concatenate([r_pows, field.mul(r_pows[:, :, :more], r_pows[:, :, -1:])], axis=2)
    wires = field.zeros_shape((b, 2 * chunk, calls))
    wires[:, 0::2] = field.mul(r_pows, xs).transpose(0, 2, 1)
    wires[:, 1::2] = field.sub(xs, shares_inv).transpose(0, 2, 1)
    return wires


def range_check_wire_evals(
    field: type[_PrimeField],
    x: np.ndarray,
    joint_rand: np.ndarray,
    chunk: int,
    calls: int,
    shares_inv: np.ndarray,
    lam: np.ndarray,
) -> np.ndarray:
    """sum_i lam[i] * range_check_wires(...)[:, i] without building the wires.

    Slot j: left sum_i (lam_i r_i^(j+1)) x_ij, right sum_i lam_i x_ij - (sum_i lam_i)/num_shares.
    The scaled powers lam_i r_i^(j+1) grow by doubling like the wires' powers,
    so this saves the (calls, chunk) product of the wires and their weighting.
    """
    return range_check_wire_evals_rows(
        field, x.reshape(1, -1), joint_rand.reshape(1, -1), chunk, calls, shares_inv, lam.reshape(1, -1)
    )[0]


def range_check_wire_evals_rows(
    field: type[_PrimeField],
    x: np.ndarray,
    joint_rand: np.ndarray,
    chunk: int,
    calls: int,
    shares_inv: np.ndarray,
    lam: np.ndarray,
) -> np.ndarray:
    """`range_check_wire_evals` for B reports (x (B, n), joint_rand and lam (B, calls)) -> (B, 2*chunk)."""
    b = x.shape[0]
    if field.NATIVE:  # one compiled pass over x with lazily reduced sums, no temporaries of x's size
        return field.range_evals(x, joint_rand, lam, chunk, calls, shares_inv)  # type: ignore[attr-defined]
    padded = field.zeros_shape((b, calls * chunk))
    padded[:, : x.shape[1]] = x
    xs = padded.reshape(b, calls, chunk)
    r = joint_rand.reshape(b, calls, 1)
    lam3 = lam.reshape(b, calls, 1)
    scaled = field.mul(lam3, r)  # lam_i r_i^1, grows to (B, calls, chunk)
    r_w = r
    while scaled.shape[2] < chunk:
        have = scaled.shape[2]
        more = min(have, chunk - have)
        scaled = np.concatenate([scaled, field.mul(scaled[:, :, :more], r_w)], axis=2)
        if scaled.shape[2] < chunk:
            r_w = field.mul(r_w, r_w)
    left = field.mul_sum(scaled, xs, axis=1)
    right = field.sub(field.mul_sum(lam3, xs, axis=1), field.mul(field.sum(lam, axis=-1).reshape(b, 1), shares_inv))
    return np.stack([left, right], axis=-1).reshape(b, 2 * chunk)  # interleaved as in the 1-D version


class _RangeCheckRows:
    """Wires shared by the circuits whose only gadget is a range check (SumVec, Histogram, MultihotCountVec)."""

    field: type[_PrimeField]
    chunk_length: int
    GADGET_CALLS: list[int]

    def wire_inputs(self, meas, joint_rand, num_shares):  # type: ignore[no-untyped-def]
        return [
            range_check_wires(
                self.field, meas, joint_rand, self.chunk_length, self.GADGET_CALLS[0], self.shares_inv(num_shares)
            )
        ]

    def wire_evals(self, meas, joint_rand, num_shares, weights):  # type: ignore[no-untyped-def]
        return [
            range_check_wire_evals(
                self.field, meas, joint_rand, self.chunk_length, self.GADGET_CALLS[0], self.shares_inv(num_shares),
                weights[0],
            )
        ]

    def wire_inputs_rows(self, field, meas, joint_rand, num_shares):  # type: ignore[no-untyped-def]
        return [
            range_check_wires_rows(
                field, meas, joint_rand, self.chunk_length, self.GADGET_CALLS[0], field.const(field.s_inv(num_shares))
            )
        ]

    def wire_evals_rows(self, field, meas, joint_rand, num_shares, weights):  # type: ignore[no-untyped-def]
        return [
            range_check_wire_evals_rows(
                field, meas, joint_rand, self.chunk_length, self.GADGET_CALLS[0],
                field.const(field.s_inv(num_shares)), weights[0],
            )
        ]

    def prove_gadget_rows(self, field, index, meas, joint_rand, seeds, p, n):  # type: ignore[no-untyped-def]
        """Native fields: the range check's gadget values in one fused pass, no wire matrix."""
        if not field.NATIVE or n != 2 * p:
            return None
        return field.range_prove(
            meas, joint_rand, seeds, field.const(1), self.chunk_length, self.GADGET_CALLS[0], p,
            native_extend_plan(field, p),
        )


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
        return _weighted_decode(field, meas, self.weights).reshape(-1, 1)

    def encode(self, measurement: int) -> np.ndarray:
        return self.field.from_ints(encode_range_checked(_as_int(measurement, "Sum measurement"), self.max_measurement))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return _weighted_decode(self.field, meas, self.weights)

    def decode(self, output: np.ndarray, num_measurements: int) -> int:
        return self.field.to_ints(output)[0]


class SumVec(_RangeCheckRows, Valid[list[int], list[int]]):
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

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        return self.field.sum(gadget_outputs[0], axis=-1)

    def combine_rows(self, field, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        return field.sum(gadget_outputs[0], axis=-1).reshape(-1, 1)

    def encode(self, measurement: Sequence[int]) -> np.ndarray:
        if len(measurement) != self.length:
            raise InvalidMeasurement(f"SumVec measurement must have length {self.length}")
        arr = np.asarray(measurement)
        if arr.shape == (self.length,) and arr.dtype.kind in "biu" and self.max_measurement < 2**63:
            return self._encode_machine_ints(arr)
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

    def _encode_machine_ints(self, arr: np.ndarray) -> np.ndarray:
        """The same digits as `encode`, vectorised for integer/bool arrays (values < 2^63)."""
        v = arr.astype(np.int64)  # uint64 values >= 2^63 wrap negative and are rejected like any > max
        if v.min() < 0 or v.max() > self.max_measurement:
            raise InvalidMeasurement(f"SumVec entry outside [0, {self.max_measurement}]")
        top = v > (1 << (self.bits - 1)) - 1
        low = np.where(top, v - self.weights[-1], v).astype(np.uint64)
        digits = np.empty((v.shape[0], self.bits), dtype=np.uint64)  # filled in place: no joined copies
        np.right_shift(low[:, None], np.arange(self.bits - 1, dtype=np.uint64)[None, :], out=digits[:, :-1])
        digits[:, :-1] &= np.uint64(1)
        digits[:, -1] = top
        return self.field.from_u64(digits.reshape(-1))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return _weighted_decode(self.field, meas.reshape(self.length, self.bits), self.weights)

    def truncate_rows(self, field, meas):  # type: ignore[no-untyped-def]
        return _weighted_decode(field, meas.reshape(-1, self.length, self.bits), self.weights)

    def decode(self, output: np.ndarray, num_measurements: int) -> list[int]:
        return self.field.to_ints(output)


class Histogram(_RangeCheckRows, Valid[int, list[int]]):
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


class MultihotCountVec(_RangeCheckRows, Valid[list[int], list[int]]):
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
        reported = _weighted_decode(f, meas[self.length :], self.weight_weights)
        return f.concat([range_check, f.sub(weight, reported)])

    def combine_rows(self, field, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        range_check = field.sum(gadget_outputs[0], axis=-1)
        weight = field.sum(meas[:, : self.length], axis=-1)
        reported = _weighted_decode(field, meas[:, self.length :], self.weight_weights)
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


class FixedPointBoundedL2Vec(Valid[Sequence[float], list[float]]):
    """Our extension: fixed-point vector in [-1, 1)^d with squared L2 norm <= a bound.

    Encoding (docs/prio3.md): entry x -> q = round(x * 2^f) in [-2^f, 2^f), stored
    offset-binary u = q + 2^f as f+1 bits; then the claimed squared norm
    N = sum q_i^2 (an integer, = ||x||^2 * 2^(2f)) as a draft-18 range-checked
    integer in [0, max_norm].  Gadget 0, ParallelSum(Mul, chunk), checks every
    bit (entries and norm digits) with joint randomness; gadget 1,
    ParallelSum(Mul, norm_chunk), squares the re-centred entries
    v_i = u_i - 2^f so the circuit recomputes N.  Outputs: [bit check,
    sum_i v_i^2 - claimed N].
    """

    EVAL_OUTPUT_LEN = 2

    def __init__(
        self,
        field: type[_PrimeField],
        length: int,
        frac_bits: int,
        chunk_length: int,
        norm_chunk_length: int,
        max_norm_sq: Fraction | int | None = None,
    ) -> None:
        if length < 1 or chunk_length < 1 or norm_chunk_length < 1:
            raise ValueError("length and chunk lengths must be positive")
        if not 1 <= frac_bits <= 31:
            raise ValueError("frac_bits must be in [1, 31]")
        scale = 1 << frac_bits
        bound = Fraction(1) if max_norm_sq is None else Fraction(max_norm_sq)
        if bound <= 0:
            raise ValueError("max_norm_sq must be positive")
        self.max_norm_int = int(bound * scale * scale)  # floor: N <= bound * 4^f
        if self.max_norm_int < 1:
            raise ValueError("max_norm_sq too small for frac_bits")
        # The in-circuit norm sum_i v_i^2 <= length * 4^f and every
        # intermediate must stay far below p for the check to be sound.
        if length * scale * scale * 4 >= field.MODULUS or field.MODULUS < 2**100:
            raise ValueError("field too small for this length and frac_bits (use Field128)")
        self.field = field
        self.length = length
        self.frac_bits = frac_bits
        self.scale = scale
        self.chunk_length = chunk_length
        self.norm_chunk_length = norm_chunk_length
        self.entry_bits = frac_bits + 1
        self.norm_weights = range_checked_weights(self.max_norm_int)
        self.norm_bits = len(self.norm_weights)
        self.MEAS_LEN = length * self.entry_bits + self.norm_bits
        self.OUTPUT_LEN = length
        bit_calls = -(-self.MEAS_LEN // chunk_length)
        sq_calls = -(-length // norm_chunk_length)
        self.GADGETS = [ParallelSum(Mul(), chunk_length), ParallelSum(Mul(), norm_chunk_length)]
        self.GADGET_CALLS = [bit_calls, sq_calls]
        self.JOINT_RAND_LEN = bit_calls
        self._entry_weights = [1 << i for i in range(self.entry_bits)]

    def _centred(self, meas: np.ndarray, num_shares: int) -> np.ndarray:
        f = self.field
        u = _weighted_decode(f, meas[: self.length * self.entry_bits].reshape(self.length, self.entry_bits), self._entry_weights)
        return f.sub(u, f.mul(f.const(self.scale), self.shares_inv(num_shares)))

    def wire_inputs(self, meas, joint_rand, num_shares):  # type: ignore[no-untyped-def]
        f = self.field
        sinv = self.shares_inv(num_shares)
        bit_wires = range_check_wires(f, meas, joint_rand, self.chunk_length, self.GADGET_CALLS[0], sinv)
        v = self._centred(meas, num_shares)
        calls = self.GADGET_CALLS[1]
        padded = zeros2(f, 1, calls * self.norm_chunk_length)[0]
        padded[: self.length] = v
        vs = padded.reshape(calls, self.norm_chunk_length).T  # (chunk, calls)
        sq_wires = zeros2(f, 2 * self.norm_chunk_length, calls)
        sq_wires[0::2] = vs
        sq_wires[1::2] = vs
        return [bit_wires, sq_wires]

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        f = self.field
        bit_check = f.sum(gadget_outputs[0], axis=-1)
        norm = f.sum(gadget_outputs[1], axis=-1)
        claimed = _weighted_decode(f, meas[self.length * self.entry_bits :], self.norm_weights)
        return f.concat([bit_check, f.sub(norm, claimed)])

    # Batches (row = report): the same wires' weighted sums without building them.
    def _entries_rows(self, field: type[_PrimeField], meas: np.ndarray) -> np.ndarray:
        bits = meas[:, : self.length * self.entry_bits].reshape(-1, self.length, self.entry_bits)
        return _weighted_decode(field, bits, self._entry_weights)

    def wire_evals_rows(self, field, meas, joint_rand, num_shares, weights):  # type: ignore[no-untyped-def]
        b = meas.shape[0]
        sinv = field.const(field.s_inv(num_shares))
        bit = range_check_wire_evals_rows(field, meas, joint_rand, self.chunk_length, self.GADGET_CALLS[0], sinv, weights[0])
        # Square gadget: both inputs of slot j in call k are v[k*chunk + j], so each
        # slot's weighted sum is sum_k lam_k v[k*chunk + j], used twice.
        v = field.sub(self._entries_rows(field, meas), field.mul(field.const(self.scale), sinv))
        calls, chunk = self.GADGET_CALLS[1], self.norm_chunk_length
        padded = field.zeros_shape((b, calls * chunk))
        padded[:, : self.length] = v
        sums = field.mul_sum(weights[1].reshape(b, calls, 1), padded.reshape(b, calls, chunk), axis=1)
        return [bit, np.stack([sums, sums], axis=-1).reshape(b, 2 * chunk)]

    def combine_rows(self, field, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        bit_check = field.sum(gadget_outputs[0], axis=-1)
        norm = field.sum(gadget_outputs[1], axis=-1)
        claimed = _weighted_decode(field, meas[:, self.length * self.entry_bits :], self.norm_weights)
        return field.stack([bit_check, field.sub(norm, claimed)], axis=1)

    def truncate_rows(self, field, meas):  # type: ignore[no-untyped-def]
        return self._entries_rows(field, meas)

    def quantize(self, measurement: Sequence[float | Fraction | int]) -> list[int]:
        """Fixed-point q_i = round-half-even(x_i * 2^f), checked in [-2^f, 2^f)."""
        if len(measurement) != self.length:
            raise InvalidMeasurement(f"measurement must have length {self.length}")
        qs = []
        for x in measurement:
            try:
                fx = Fraction(x)
            except (TypeError, ValueError) as exc:
                raise InvalidMeasurement(f"entry {x!r} is not a finite number") from exc
            if not -1 <= fx < 1:
                raise InvalidMeasurement(f"entry {x!r} outside [-1, 1)")
            q = round(fx * self.scale)
            if q >= self.scale:
                raise InvalidMeasurement(f"entry {x!r} rounds to 1, outside [-1, 1)")
            qs.append(q)
        return qs

    def encode(self, measurement: Sequence[float | Fraction | int]) -> np.ndarray:
        qs = self.quantize(measurement)
        norm = sum(q * q for q in qs)
        if norm > self.max_norm_int:
            raise InvalidMeasurement("squared L2 norm exceeds the bound")
        return self.encode_fixed(qs, norm)

    def encode_fixed(self, qs: Sequence[int], claimed_norm: int) -> np.ndarray:
        """Bits of u_i = q_i + 2^f, then the range-checked claimed norm (no norm check)."""
        us = [q + self.scale for q in qs]
        if any(not 0 <= u < 2 * self.scale for u in us):
            raise InvalidMeasurement("fixed-point entry out of range")
        entry_bits = self.field.encode_into_bit_vec(us, self.entry_bits)
        norm_digits = self.field.from_ints(encode_range_checked(claimed_norm, self.max_norm_int))
        return np.concatenate([entry_bits, norm_digits])

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return _weighted_decode(
            self.field, meas[: self.length * self.entry_bits].reshape(self.length, self.entry_bits), self._entry_weights
        )

    def decode(self, output: np.ndarray, num_measurements: int) -> list[float]:
        """Sum of the entries: (sum u_i - n * 2^f) / 2^f per coordinate, exact then rounded to float."""
        p = self.field.MODULUS
        out = []
        for s in self.field.to_ints(output):
            centred = (s - num_measurements * self.scale) % p
            if centred > p // 2:
                centred -= p
            out.append(float(Fraction(centred, self.scale)))
        return out


__all__ = [
    "Count",
    "FixedPointBoundedL2Vec",
    "Histogram",
    "MultihotCountVec",
    "Sum",
    "SumVec",
    "encode_range_checked",
    "range_check_wire_evals",
    "range_check_wire_evals_rows",
    "range_check_wires",
    "range_checked_weights",
]
