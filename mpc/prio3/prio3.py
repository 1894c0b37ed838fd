"""Prio3 (draft-irtf-cfrg-vdaf-18, Section 7): an FLP turned into a one-round VDAF.

Roles (see mpc/vdaf.py):

* client:      `Prio3.shard` -> (public share, [leader share, helper seed shares...])
* aggregator:  `verify_init` -> (state, verifier share); `verify_next` -> output share
* leader:      `verifier_shares_to_message` -> verifier message (decides the proofs)
* collector:   `unshard`

Aggregators verifying many reports of one task (an aggregation job) call
`verify_init_batch` / `verifier_shares_to_message_batch` (mpc/prio3/batch.py):
the same bytes per report, computed on (reports x elements) arrays, with one
error object in place of each malformed report.  The draft's variants
(`Prio3Count`, ...) are in mpc/prio3/instances.py.

Everything crossing a wire is bytes in the draft's encoding (Section 7.2.7);
decoders reject wrong lengths, trailing bytes and non-canonical field elements
with `DecodeError`; a failed proof or joint-randomness check raises
`VerifyError`.  Randomness is the caller's ``rand`` (RAND_SIZE bytes) so the
draft's vectors are reproducible; `Prio3.shard` callers in production pass
``os.urandom(vdaf.RAND_SIZE)``.
"""

from __future__ import annotations

import hmac
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from twinmpc.crypto.field_native import is_bits, prover_threads
from twinmpc.mpc.errors import DecodeError, InvalidMeasurement, VerifyError
from twinmpc.mpc.prio3.base import M, Prio3VerifyState, R
from twinmpc.mpc.prio3.batch import Prio3Batch
from twinmpc.mpc.prio3.flp import Valid


_BACKGROUND: ThreadPoolExecutor | None = None


def _background() -> ThreadPoolExecutor:
    """One worker thread for a report's long XOF next to its arithmetic (created on first use)."""
    global _BACKGROUND
    if _BACKGROUND is None:
        _BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prio3-xof")
    return _BACKGROUND


class Prio3(Prio3Batch[M, R]):
    """Generic Prio3 over a validity circuit; the variants in mpc/prio3/instances.py fix the circuit and ID."""

    # ------------------------------------------------------------------ client
    def shard(self, ctx: bytes, measurement: M, nonce: bytes, rand: bytes) -> tuple[bytes, list[bytes]]:
        """Client: encode, secret-share, prove (draft Section 7.2.1)."""
        return self.shard_encoded(ctx, self._encode_for_shard(measurement), nonce, rand)

    def _encode_for_shard(self, measurement: M) -> np.ndarray:
        """The encoded measurement; with the fused kernel, as uint8 digits where the circuit
        proves from them (SumVec(100000): 0.8 MB instead of 12.8 MB of Field128 zeros and ones)."""
        if self._fused:
            bits = self.flp.valid.encode_bits(measurement)
            if bits is not None:
                return bits
        return self.flp.encode(measurement)

    def shard_encoded(self, ctx: bytes, meas: np.ndarray, nonce: bytes, rand: bytes) -> tuple[bytes, list[bytes]]:
        """Shard an already encoded measurement (also how tests play a malicious client).

        `meas` is a field vector, or on the fused path the uint8 digits of `Valid.encode_bits`.

        `shard_encoded_batch` computes the same bytes for many reports; this
        one-report twin skips its per-row bookkeeping (a one-row batch is
        ~20 us slower for Count, ~5 % for Histogram(100)).  Change them together.
        """
        if len(nonce) != self.NONCE_SIZE:
            raise ValueError("nonce must be NONCE_SIZE bytes")
        if len(rand) != self.RAND_SIZE:
            raise ValueError("rand must be RAND_SIZE bytes")
        if meas.shape != (self.flp.MEAS_LEN,):
            raise InvalidMeasurement("encoded measurement has the wrong length")
        if is_bits(meas) and not (self._fused and self.flp.valid.encode_bits.__func__ is not Valid.encode_bits):
            raise InvalidMeasurement("uint8 digits are accepted only where the circuit proves from them")
        f = self.field
        s = self.xof.SEED_SIZE
        seeds = [rand[i : i + s] for i in range(0, len(rand), s)]
        k = self.SHARES - 1
        if self._uses_jr:
            helper_shares = seeds[0 : 2 * k : 2]
            helper_blinds = seeds[1 : 2 * k : 2]
            leader_blind, prove_seed = seeds[2 * k], seeds[2 * k + 1]
        else:
            helper_shares = seeds[:k]
            helper_blinds = []
            leader_blind, prove_seed = b"", seeds[k]

        shard_meas = self._shard_meas_fused if self._fused else self._shard_meas
        leader_meas, parts = shard_meas(ctx, meas, nonce, helper_shares, helper_blinds, leader_blind)
        leader_enc = self._encoding(f, leader_meas)
        if self._uses_jr:
            joint_rands = self._joint_rands(ctx, self._joint_rand_seed(ctx, parts))

        prove_rands = self._prove_rands(ctx, prove_seed)
        jl, pl = self.flp.JOINT_RAND_LEN, self.flp.PROVE_RAND_LEN
        proofs = [
            self.flp.prove(
                meas,
                prove_rands[i * pl : (i + 1) * pl],
                joint_rands[i * jl : (i + 1) * jl] if self._uses_jr else f.zeros(0),
            )
            for i in range(self.PROOFS)
        ]
        leader_proofs = f.concat(proofs)
        for j, share in enumerate(helper_shares, start=1):
            leader_proofs = f.sub(leader_proofs, self._helper_proofs_share(ctx, j, share))

        leader = b"".join([leader_enc, f.encode_vec(leader_proofs), leader_blind])
        del leader_enc, leader_meas
        helpers = [share + blind for share, blind in zip(helper_shares, helper_blinds or [b""] * k)]
        return b"".join(parts), [leader] + helpers

    # ------------------------------------------------------------------ aggregators
    def verify_init(
        self,
        verify_key: bytes,
        ctx: bytes,
        agg_id: int,
        agg_param: bytes,
        nonce: bytes,
        public_share: bytes,
        input_share: bytes,
    ) -> tuple[Prio3VerifyState, bytes]:
        """Aggregator: expand its share, query the proofs (draft Section 7.2.2)."""
        if len(verify_key) != self.VERIFY_KEY_SIZE:
            raise ValueError("verify_key must be VERIFY_KEY_SIZE bytes")
        if not 0 <= agg_id < self.SHARES:
            raise ValueError("agg_id out of range")
        if len(nonce) != self.NONCE_SIZE:
            raise DecodeError("nonce has the wrong length")
        self._check_agg_param(agg_param)
        f = self.field
        parts = self._decode_public_share(public_share)
        meas_share, proofs_share, blind, meas_enc, part = self._decode_input_share(ctx, agg_id, input_share, nonce)
        pending = None
        if parts is not None and part is None and self._fused and meas_enc is not None and prover_threads() > 1:
            # A long share hashed into the joint-randomness part on a second thread (the compiled
            # XOF releases the GIL) while this one computes the output share.
            pending = _background().submit(self._joint_rand_part, ctx, agg_id, blind, meas_enc, nonce)
        out_share = self.flp.truncate(meas_share)
        if pending is not None:
            part = pending.result()

        corrected_seed: bytes | None = None
        jr_part = b""
        joint_rands = f.zeros(0)
        if parts is not None:  # this variant uses joint randomness
            jr_part = part if part is not None else self._joint_rand_part(
                ctx, agg_id, blind, meas_enc if meas_enc is not None else self._encoding(f, meas_share), nonce
            )
            parts = list(parts)
            parts[agg_id] = jr_part
            corrected_seed = self._joint_rand_seed(ctx, parts)
            joint_rands = self._joint_rands(ctx, corrected_seed)

        query_rands = self._query_rands(verify_key, ctx, nonce)
        pl, ql, jl = self.flp.PROOF_LEN, self.flp.QUERY_RAND_LEN, self.flp.JOINT_RAND_LEN
        verifiers = [
            self.flp.query(
                meas_share,
                proofs_share[i * pl : (i + 1) * pl],
                query_rands[i * ql : (i + 1) * ql],
                joint_rands[i * jl : (i + 1) * jl],
                self.SHARES,
            )
            for i in range(self.PROOFS)
        ]
        verifier_share = f.encode_vec(f.concat(verifiers)) + jr_part
        return Prio3VerifyState(out_share, corrected_seed), verifier_share

    def verifier_shares_to_message(self, ctx: bytes, agg_param: bytes, verifier_shares: list[bytes]) -> bytes:
        """Leader: sum verifier shares, decide each proof, derive the joint randomness seed."""
        self._check_agg_param(agg_param)
        if len(verifier_shares) != self.SHARES:
            raise DecodeError("expected one verifier share per aggregator")
        f = self.field
        decoded = [self._decode_verifier_share(v) for v in verifier_shares]
        total = decoded[0][0]
        for vec, _ in decoded[1:]:
            total = f.add(total, vec)
        vl = self.flp.VERIFIER_LEN
        for i in range(self.PROOFS):
            if not self.flp.decide(total[i * vl : (i + 1) * vl]):
                raise VerifyError("proof verifier check failed")
        if not self._uses_jr:
            return b""
        return self._joint_rand_seed(ctx, [part for _, part in decoded])

    def verify_next(self, ctx: bytes, state: Prio3VerifyState, verifier_message: bytes) -> np.ndarray:
        """Aggregator: check the joint randomness the client used, release the output share."""
        if not isinstance(state, Prio3VerifyState) or state.out_share.shape != (self.flp.OUTPUT_LEN,):
            raise ValueError("verification state does not belong to this VDAF")
        if self._uses_jr:
            if len(verifier_message) != self.xof.SEED_SIZE:
                raise DecodeError("verifier message has the wrong length")
            if state.corrected_joint_rand_seed is None:
                raise ValueError("verification state does not belong to this VDAF")
            if not hmac.compare_digest(verifier_message, state.corrected_joint_rand_seed):
                raise VerifyError("joint randomness check failed")
        elif verifier_message != b"":
            raise DecodeError("verifier message must be empty for this Prio3 variant")
        if self.agg_field is self.field:
            return state.out_share
        return self.agg_field.from_backend(self.field, state.out_share)

    # ------------------------------------------------------------------ aggregation
    def agg_init(self, agg_param: bytes) -> np.ndarray:
        self._check_agg_param(agg_param)
        return self.agg_field.zeros(self.flp.OUTPUT_LEN)

    def agg_update(self, agg_param: bytes, agg_share: np.ndarray, out_share: np.ndarray) -> np.ndarray:
        self._check_agg_param(agg_param)
        if out_share.shape != (self.flp.OUTPUT_LEN,):
            raise ValueError("output share has the wrong length")
        return self.agg_field.add(agg_share, out_share)

    def merge(self, agg_param: bytes, agg_shares: list[np.ndarray]) -> np.ndarray:
        agg = self.agg_init(agg_param)
        for share in agg_shares:
            agg = self.agg_update(agg_param, agg, share)
        return agg

    def encode_agg_share(self, agg_share: np.ndarray) -> bytes:
        return self.agg_field.encode_vec(agg_share)

    def decode_agg_share(self, encoded: bytes) -> np.ndarray:
        if len(encoded) != self.agg_field.ENCODED_SIZE * self.flp.OUTPUT_LEN:
            raise DecodeError("aggregate share has the wrong length")
        return self.agg_field.decode_vec(encoded)

    def unshard(self, agg_param: bytes, agg_shares: list[bytes], num_measurements: int) -> R:
        """Collector: sum the aggregate shares and decode (draft Section 7.2.6)."""
        if len(agg_shares) != self.SHARES:
            raise DecodeError("expected one aggregate share per aggregator")
        if num_measurements < 1:
            raise ValueError("num_measurements must be positive")
        agg = self.merge(agg_param, [self.decode_agg_share(a) for a in agg_shares])
        return self.flp.decode(agg, num_measurements)


__all__ = ["Prio3"]
