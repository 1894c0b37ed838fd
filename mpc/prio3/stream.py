"""A helper's verification of a long report without holding its measurement share (Section 7.2.2).

A helper's measurement share is the XOF expansion of a 32-byte seed, 12.8 MB
for SumVec(100000).  `verify_init` holds it (one pass, fastest); an aggregation
job verifying many long reports (`verify_init_batch`) would then hold one
such share in flight besides every finished report's output shares.  Here the
share is expanded twice instead, never whole:

1. the compiled fused kernel squeezes it into the helper's joint-randomness
   part (both XOF streams on SIMD lanes), which gives the corrected joint
   randomness;
2. it is squeezed again in blocks of whole calls; each block adds its part of
   the range check's weighted sums (linear in the measurement, see
   `range_check_wire_evals_rows`) and gives its output elements.

Only circuits that allow it (`Valid.STREAM_UNIT`: SumVec) and the fused path
(native field, the draft's TurboSHAKE XOF) take this route; the bytes are
those of `verify_init` (tests compare them, errors included).  The price is
the second squeeze (~15 ms for SumVec(100000)).
"""

from __future__ import annotations

import numpy as np

from twinmpc.crypto.xof import XofTurboShake128
from twinmpc.mpc.errors import DecodeError, VerifyError
from twinmpc.mpc.prio3.base import M, Prio3Base, Prio3VerifyState, R
from twinmpc.mpc.prio3.flp import QueryPoints
from twinmpc.mpc.prio3.params import USAGE_JOINT_RAND_PART, USAGE_MEAS_SHARE
from twinmpc.mpc.prio3.range_check import RangeCheckRows, range_check_wire_evals_rows

# Measurement elements per block of the second pass (rounded to whole calls and output units):
# 1 MB of Field128 scratch.
STREAM_BLOCK_ELEMENTS = 1 << 16


class Prio3Stream(Prio3Base[M, R]):
    """`_verify_init_streamed`, the helper's two-pass verification of a long report."""

    def _streams_helper(self, agg_id: int) -> bool:
        """Whether this aggregator verifies long reports in two passes (helpers of streamable circuits)."""
        valid = self.flp.valid
        return agg_id > 0 and self._fused and valid.STREAM_UNIT is not None and isinstance(valid, RangeCheckRows)

    def _verify_init_streamed(
        self, verify_key: bytes, ctx: bytes, agg_id: int, agg_param: bytes, nonce: bytes, public_share: bytes,
        input_share: bytes,
    ) -> tuple[Prio3VerifyState, bytes]:
        """`verify_init` of a helper (same result, same errors) in two passes over its share."""
        if len(nonce) != self.NONCE_SIZE:
            raise DecodeError("nonce has the wrong length")
        self._check_agg_param(agg_param)
        f = self.field
        s = self.xof.SEED_SIZE
        parts = self._decode_public_share(public_share)
        if len(input_share) != s + (s if self._uses_jr else 0):
            raise DecodeError("helper input share has the wrong length")
        share, blind = input_share[:s], input_share[s:]
        proofs = self._helper_proofs_share(ctx, agg_id, share)
        n = self.flp.MEAS_LEN
        dst_meas = self._dst(USAGE_MEAS_SHARE, ctx)

        corrected_seed: bytes | None = None
        jr_part = b""
        joint_rands = f.zeros(0)
        if parts is not None:  # pass 1: the joint-randomness part, the share hashed as it is squeezed
            part_xof = XofTurboShake128.native(blind, self._dst(USAGE_JOINT_RAND_PART, ctx), bytes([agg_id]) + nonce)
            f.expand_share(XofTurboShake128.native(share, dst_meas, bytes([agg_id])), n, None, part_xof)  # type: ignore[attr-defined]
            jr_part = part_xof.read(s)
            parts = list(parts)
            parts[agg_id] = jr_part
            corrected_seed = self._joint_rand_seed(ctx, parts)
            joint_rands = self._joint_rands(ctx, corrected_seed)

        query_rands = self._query_rands(verify_key, ctx, nonce)
        pl, ql, jl = self.flp.PROOF_LEN, self.flp.QUERY_RAND_LEN, self.flp.JOINT_RAND_LEN
        points = [
            self.flp.query_points(f, proofs[i * pl : (i + 1) * pl].reshape(1, -1), query_rands[i * ql : (i + 1) * ql].reshape(1, -1))
            for i in range(self.PROOFS)
        ]
        if any(pt.hit[0] for pt in points):
            raise VerifyError("query randomness hit a root of unity")
        jrs = [joint_rands[i * jl : (i + 1) * jl].reshape(1, -1) for i in range(self.PROOFS)]
        evals, out_share = self._stream_pass(ctx, agg_id, share, points, jrs)
        verifiers = [
            self.flp.query_finish(f, pt, None, jr, self.SHARES, [ev])[0][0] for pt, jr, ev in zip(points, jrs, evals)
        ]
        return Prio3VerifyState(out_share, corrected_seed), f.encode_vec(f.concat(verifiers)) + jr_part

    def _stream_pass(
        self, ctx: bytes, agg_id: int, share: bytes, points: list[QueryPoints], jrs: list[np.ndarray]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Pass 2: per proof the range check's weighted sums (1, 2*chunk), and the output share."""
        f = self.field
        valid = self.flp.valid
        n = self.flp.MEAS_LEN
        chunk = valid.chunk_length  # type: ignore[attr-defined]
        calls = valid.GADGET_CALLS[0]
        unit = valid.STREAM_UNIT
        assert unit is not None
        step = unit // np.gcd(chunk, unit)  # calls per block: a whole number of output units
        block_calls = max(step, STREAM_BLOCK_ELEMENTS // chunk // step * step)
        shares_inv = f.const(f.s_inv(self.SHARES))
        xof = XofTurboShake128.native(share, self._dst(USAGE_MEAS_SHARE, ctx), bytes([agg_id]))
        buf = np.empty(min(n, block_calls * chunk), dtype=f.DTYPE)
        evals = [f.zeros_shape((1, 2 * chunk)) for _ in points]
        outs = []
        for c0 in range(0, calls, block_calls):
            c1 = min(calls, c0 + block_calls)
            block = buf[: min(n, c1 * chunk) - c0 * chunk]
            f.expand_share(xof, block.shape[0], block)  # type: ignore[attr-defined]
            for i, (pt, jr) in enumerate(zip(points, jrs)):
                lam = pt.wire_weights[0][:, 1 + c0 : 1 + c1]
                part = range_check_wire_evals_rows(f, block.reshape(1, -1), jr[:, c0:c1], chunk, c1 - c0, shares_inv, lam)
                evals[i] = f.add(evals[i], part)
            outs.append(valid.truncate_block(f, block))
        return evals, f.concat(outs)


__all__ = ["STREAM_BLOCK_ELEMENTS", "Prio3Stream"]
