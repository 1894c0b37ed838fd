"""Our Prio3 extension circuit: a fixed-point vector with a bounded squared L2 norm (docs/prio3.md)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from twinmpc.crypto.field import _PrimeField
from twinmpc.mpc.errors import InvalidMeasurement
from twinmpc.mpc.prio3.flp import Mul, ParallelSum, Valid, zeros2
from twinmpc.mpc.prio3.range_check import (
    encode_range_checked,
    range_check_wire_evals_rows,
    range_check_wires,
    range_checked_weights,
    weighted_decode,
)


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
        u = weighted_decode(f, meas[: self.length * self.entry_bits].reshape(self.length, self.entry_bits), self._entry_weights)
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
        claimed = weighted_decode(f, meas[self.length * self.entry_bits :], self.norm_weights)
        return f.concat([bit_check, f.sub(norm, claimed)])

    # Batches (row = report): the same wires' weighted sums without building them.
    def _entries_rows(self, field: type[_PrimeField], meas: np.ndarray) -> np.ndarray:
        bits = meas[:, : self.length * self.entry_bits].reshape(-1, self.length, self.entry_bits)
        return weighted_decode(field, bits, self._entry_weights)

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
        claimed = weighted_decode(field, meas[:, self.length * self.entry_bits :], self.norm_weights)
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
        return weighted_decode(
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


__all__ = ["FixedPointBoundedL2Vec"]
