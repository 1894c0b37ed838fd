"""Run a task's measurement type through Prio3 (robust against poisoning clients).

Maps our measurement types onto the draft's Prio3 variants, picks chunk
lengths near sqrt(measurement bits) (the draft's recommendation, Section
7.4.3), and adapts the result: the sum of aggregate shares is decoded as
signed field elements (so DP noise below zero stays negative) and then
through the measurement type's own decode (e.g. Mean -> mean, sum, count).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from twinmpc.crypto import ring
from twinmpc.mpc.errors import InvalidMeasurement, InvalidTask
from twinmpc.mpc.measurements import (
    Count,
    FixedPointVec,
    Histogram,
    MeasurementType,
    Sum,
    SumVec,
)
from twinmpc.mpc.prio3 import (
    Prio3Count,
    Prio3FixedPointBoundedL2Vec,
    Prio3Histogram,
    Prio3Sum,
    Prio3SumVec,
)


def _chunk_length(total_bits: int) -> int:
    return max(1, math.isqrt(total_bits))


class Prio3Scheme:
    """A Prio3 instance plus the measurement type that shapes its input and result."""

    def __init__(self, prio3, measurement: MeasurementType, output_offset: int = 0) -> None:
        self.prio3 = prio3
        self.measurement = measurement
        self.output_offset = output_offset  # per report, per coordinate (offset-binary encodings)
        self.ID = prio3.ID
        self.SHARES = prio3.SHARES
        self.ROUNDS = prio3.ROUNDS
        self.NONCE_SIZE = prio3.NONCE_SIZE
        self.RAND_SIZE = prio3.RAND_SIZE
        self.VERIFY_KEY_SIZE = prio3.VERIFY_KEY_SIZE
        self.field = prio3.field

    def __repr__(self) -> str:
        return f"Prio3Scheme({self.prio3!r}, {self.measurement!r})"

    def input_share_size(self, agg_id: int) -> int:
        """Leader: measurement + proof shares (+ blind); helper: seed (+ blind). Draft Section 7.2.1."""
        seed = self.prio3.xof.SEED_SIZE
        blind = seed if self.prio3.flp.JOINT_RAND_LEN > 0 else 0
        if agg_id == 0:
            flp = self.prio3.flp
            return self.field.ENCODED_SIZE * (flp.MEAS_LEN + flp.PROOF_LEN * self.prio3.PROOFS) + blind
        return seed + blind

    def _checked(self, measurement: Any) -> Any:
        """Client-side validation with every mode's errors; FixedPointVec is clipped as every mode does
        (the L2 type needs [-1, 1))."""
        self.measurement.encode(measurement)
        if isinstance(self.measurement, FixedPointVec):
            top = self.measurement.clip - 2.0**-self.measurement.frac_bits
            measurement = np.clip(np.asarray(measurement, dtype=np.float64), -self.measurement.clip, top).tolist()
        return measurement

    def shard(self, ctx: bytes, measurement: Any, nonce: bytes, rand: bytes):
        return self.prio3.shard(ctx, self._checked(measurement), nonce, rand)

    def shard_batch(self, ctx: bytes, measurements, nonces, rands):
        """Many measurements at once (`Prio3.shard_batch`); InvalidMeasurement names the first bad entry."""
        checked = []
        for b, m in enumerate(measurements):
            try:
                checked.append(self._checked(m))
            except InvalidMeasurement as exc:
                raise InvalidMeasurement(f"measurement {b}: {exc}") from exc
        return self.prio3.shard_batch(ctx, checked, nonces, rands)

    def verify_init(self, verify_key, ctx, agg_id, agg_param, nonce, public_share, input_share):
        return self.prio3.verify_init(verify_key, ctx, agg_id, agg_param, nonce, public_share, input_share)

    def verify_init_batch(self, verify_key, ctx, agg_id, agg_param, nonces, public_shares, input_shares):
        """Many reports of this task at once (`Prio3.verify_init_batch`): results or InvalidReport per report."""
        return self.prio3.verify_init_batch(verify_key, ctx, agg_id, agg_param, nonces, public_shares, input_shares)

    def verifier_shares_to_message_batch(self, ctx, agg_param, verifier_shares):
        """Leader, many reports at once: message or InvalidReport per report."""
        return self.prio3.verifier_shares_to_message_batch(ctx, agg_param, verifier_shares)

    def verifier_shares_to_message(self, ctx, agg_param, verifier_shares):
        return self.prio3.verifier_shares_to_message(ctx, agg_param, verifier_shares)

    def verify_next(self, ctx, state, verifier_message):
        return self.prio3.verify_next(ctx, state, verifier_message)

    def agg_init(self, agg_param: bytes) -> np.ndarray:
        return self.prio3.agg_init(agg_param)

    def agg_update(self, agg_param: bytes, agg_share: np.ndarray, out_share: np.ndarray) -> np.ndarray:
        return self.prio3.agg_update(agg_param, agg_share, out_share)

    def merge(self, agg_param: bytes, agg_shares: list[np.ndarray]) -> np.ndarray:
        return self.prio3.merge(agg_param, agg_shares)

    def encode_agg_share(self, agg_share: np.ndarray) -> bytes:
        return self.prio3.encode_agg_share(agg_share)

    def decode_agg_share(self, encoded: bytes) -> np.ndarray:
        return self.prio3.decode_agg_share(encoded)

    def signed_total(self, agg_shares: list[bytes]) -> list[int]:
        """Sum of the aggregate shares as signed integers (x > p/2 means x - p)."""
        total = self.merge(b"", [self.decode_agg_share(a) for a in agg_shares])
        p = self.field.MODULUS
        return [v - p if v > p // 2 else v for v in self.field.to_ints(total)]

    def unshard(self, agg_param: bytes, agg_shares: list[bytes], num_measurements: int) -> Any:
        values = [v - self.output_offset * num_measurements for v in self.signed_total(agg_shares)]
        return self.measurement.decode(ring.from_ints(np.array(values, dtype=object)), num_measurements)


def prio3_for_measurement(measurement: MeasurementType, shares: int) -> Prio3Scheme:
    """The Prio3 variant that checks `measurement`'s range with a validity proof."""
    if isinstance(measurement, Count):
        prio3 = Prio3Count(shares)
    elif isinstance(measurement, Sum):  # also Mean
        prio3 = Prio3Sum(shares, (1 << measurement.bits) - 1)
    elif isinstance(measurement, Histogram):
        prio3 = Prio3Histogram(shares, measurement.buckets, _chunk_length(measurement.buckets))
    elif isinstance(measurement, SumVec):
        n = measurement.vector_length
        prio3 = Prio3SumVec(shares, n, (1 << measurement.bits) - 1, _chunk_length(n * measurement.bits))
    elif isinstance(measurement, FixedPointVec):
        return _l2_scheme(measurement, shares)
    else:
        raise InvalidTask(f"no Prio3 variant for measurement type {measurement.NAME!r}")
    return Prio3Scheme(prio3, measurement)


def _l2_scheme(measurement: FixedPointVec, shares: int) -> Prio3Scheme:
    """Our Prio3FixedPointBoundedL2Vec: each entry in [-1, 1) and ||x||_2 <= l2_bound, proved."""
    if measurement.l2_bound is None:
        raise InvalidTask("fixedpointvec with vdaf 'prio3' needs 'l2_bound' (or use vdaf 'twinring64')")
    if measurement.clip > 1 or measurement.frac_bits > 31:
        raise InvalidTask("fixedpointvec with vdaf 'prio3' needs clip <= 1 and frac_bits <= 31")
    entry_bits = measurement.frac_bits + 1
    max_norm_sq = Fraction(measurement.l2_bound) ** 2
    norm_bits = (int(max_norm_sq * 4**measurement.frac_bits)).bit_length() + 1
    prio3 = Prio3FixedPointBoundedL2Vec(
        shares,
        measurement.vector_length,
        measurement.frac_bits,
        _chunk_length(measurement.vector_length * entry_bits),
        _chunk_length(2 * norm_bits),
        max_norm_sq=max_norm_sq,
    )
    return Prio3Scheme(prio3, measurement, output_offset=1 << measurement.frac_bits)
