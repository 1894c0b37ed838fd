"""Range checks of draft-irtf-cfrg-vdaf-18 Section 7.4: encodings and the bit-check wires.

Range-checked integers (draft-18, Section 7.4.2): an integer in [0, max] is
encoded as bits.bit_length(max) zero/one field elements with weights
1, 2, ..., 2^(bits-2), and a last weight max - (2^(bits-1) - 1), so that every
zero/one vector decodes into [0, max] and only bit checks are needed.

Bit checks (SumVec, Histogram, MultihotCountVec and our L2 circuit): a
ParallelSum(Mul, chunk) gadget fed with `range_check_wires`, or, when the
prover or verifier needs only the wires' weighted sums, `range_check_wire_evals`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from twinmpc.crypto.field import _PrimeField
from twinmpc.crypto.poly import native_extend_plan
from twinmpc.mpc.errors import InvalidMeasurement


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


def weighted_decode(field: type[_PrimeField], digits: np.ndarray, weights: Sequence[int]) -> np.ndarray:
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


class RangeCheckRows:
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


__all__ = [
    "RangeCheckRows",
    "encode_range_checked",
    "range_check_wire_evals",
    "range_check_wire_evals_rows",
    "range_check_wires",
    "range_check_wires_rows",
    "range_checked_weights",
    "weighted_decode",
]
