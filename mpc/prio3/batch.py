"""Prio3 for many reports at once (draft-irtf-cfrg-vdaf-18, Section 7.2, on arrays).

A gateway shards many measurements, an aggregation job verifies many reports
of one task: `shard_batch` / `shard_encoded_batch`, `verify_init_batch` and
`verifier_shares_to_message_batch` compute, entry by entry, the same bytes as
the one-report methods of `Prio3` (mpc/prio3/prio3.py), on (reports x
elements) arrays of the field's long-vector backend.  XOFs stay one per
draft derivation and report.  Malformed reports get an error object in place
(the one-report path names the problem); long measurements go report by report
or in slices so that the arrays stay a few MB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from twinmpc.mpc.errors import DecodeError, InvalidMeasurement, InvalidReport, VerifyError
from twinmpc.mpc.prio3.base import M, Prio3VerifyState, R
from twinmpc.mpc.prio3.params import (
    USAGE_JOINT_RAND_PART,
    USAGE_JOINT_RAND_SEED,
    USAGE_JOINT_RANDOMNESS,
    USAGE_MEAS_SHARE,
    USAGE_PROOF_SHARE,
    USAGE_PROVE_RANDOMNESS,
    USAGE_QUERY_RANDOMNESS,
)
from twinmpc.mpc.prio3.stream import Prio3Stream

# verify_init_batch works on (reports x measurement length) arrays; it slices a
# batch so that this product stays below this many elements (a few MB per array).
BATCH_MAX_ELEMENTS = 1 << 18


# shard_batch vectorises across reports below this measurement length; longer
# measurements fill the arrays on their own (measured: SumVec(1000, max 255),
# 8,000 elements, shards faster report by report; Histogram(1000) about even).
SHARD_BATCH_MAX_MEAS_LEN = 2048


class Prio3Batch(Prio3Stream[M, R]):
    """The batched paths of `Prio3`; long or malformed reports fall back to its one-report methods."""

    if TYPE_CHECKING:  # the one-report path, defined by Prio3

        def shard_encoded(self, ctx: bytes, meas: np.ndarray, nonce: bytes, rand: bytes) -> tuple[bytes, list[bytes]]: ...

        def _encode_for_shard(self, measurement: M) -> np.ndarray: ...

        def verifier_shares_to_message(self, ctx: bytes, agg_param: bytes, verifier_shares: list[bytes]) -> bytes: ...

        def verify_init(
            self, verify_key: bytes, ctx: bytes, agg_id: int, agg_param: bytes, nonce: bytes, public_share: bytes,
            input_share: bytes,
        ) -> tuple[Prio3VerifyState, bytes]: ...

    # ------------------------------------------------------------------ client
    def shard_batch(
        self, ctx: bytes, measurements: Sequence[M], nonces: Sequence[bytes], rands: Sequence[bytes]
    ) -> list[tuple[bytes, list[bytes]]]:
        """`shard` for many measurements at once (a gateway or a file upload): entry b is
        byte for byte what ``shard(ctx, measurements[b], nonces[b], rands[b])`` returns.

        Raises InvalidMeasurement naming the first bad entry (nothing is sharded then).
        """
        count = len(measurements)
        if len(nonces) != count or len(rands) != count:
            raise ValueError("measurements, nonces and rands must have the same length")
        if self.flp.MEAS_LEN >= SHARD_BATCH_MAX_MEAS_LEN:
            # Long measurements are encoded and sharded one at a time, so a batch never holds
            # more than one encoded vector (12.8 MB for SumVec(100000)); a bad entry still
            # raises before anything is returned (sharding has no side effects).
            if any(len(n) != self.NONCE_SIZE for n in nonces):
                raise ValueError("nonce must be NONCE_SIZE bytes")
            if any(len(r) != self.RAND_SIZE for r in rands):
                raise ValueError("rand must be RAND_SIZE bytes")
            out = []
            for b, m in enumerate(measurements):
                try:
                    meas = self._encode_for_shard(m)
                except InvalidMeasurement as exc:
                    raise InvalidMeasurement(f"measurement {b}: {exc}") from exc
                out.append(self.shard_encoded(ctx, meas, nonces[b], rands[b]))
                del meas
            return out
        encoded = []
        for b, m in enumerate(measurements):
            try:
                encoded.append(self.flp.encode(m))
            except InvalidMeasurement as exc:
                raise InvalidMeasurement(f"measurement {b}: {exc}") from exc
        return self.shard_encoded_batch(ctx, encoded, nonces, rands)

    def shard_encoded_batch(
        self, ctx: bytes, encoded: Sequence[np.ndarray], nonces: Sequence[bytes], rands: Sequence[bytes]
    ) -> list[tuple[bytes, list[bytes]]]:
        """`shard_encoded` for many reports: the draft's steps on (reports x elements) arrays.

        XOFs stay one per draft derivation and report; encoding, share
        arithmetic and the proofs run once per batch on the field's
        long-vector backend.  Long measurements go in slices (BATCH_MAX_ELEMENTS).
        """
        count = len(encoded)
        if len(nonces) != count or len(rands) != count:
            raise ValueError("encoded, nonces and rands must have the same length")
        if any(len(n) != self.NONCE_SIZE for n in nonces):
            raise ValueError("nonce must be NONCE_SIZE bytes")
        if any(len(r) != self.RAND_SIZE for r in rands):
            raise ValueError("rand must be RAND_SIZE bytes")
        if any(m.shape != (self.flp.MEAS_LEN,) for m in encoded):
            raise InvalidMeasurement("encoded measurement has the wrong length")
        rows_per_slice = max(1, BATCH_MAX_ELEMENTS // max(self.flp.MEAS_LEN, self.flp.PROOF_LEN * self.PROOFS))
        if count > rows_per_slice:
            out: list[tuple[bytes, list[bytes]]] = []
            for lo in range(0, count, rows_per_slice):
                hi = lo + rows_per_slice
                out.extend(self.shard_encoded_batch(ctx, encoded[lo:hi], nonces[lo:hi], rands[lo:hi]))
            return out
        if count == 0:
            return []
        if self.flp.MEAS_LEN >= SHARD_BATCH_MAX_MEAS_LEN:  # long vectors are already vectorised per report
            return [self.shard_encoded(ctx, m, n, r) for m, n, r in zip(encoded, nonces, rands)]
        f = self.field
        bf = f.LARGE
        s = self.xof.SEED_SIZE
        k = self.SHARES - 1
        uses_jr = self._uses_jr
        seeds = [[r[i : i + s] for i in range(0, len(r), s)] for r in rands]
        if uses_jr:
            helper_shares = [row[0 : 2 * k : 2] for row in seeds]
            helper_blinds = [row[1 : 2 * k : 2] for row in seeds]
            leader_blinds = [row[2 * k] for row in seeds]
            prove_seeds = [row[2 * k + 1] for row in seeds]
        else:
            helper_shares = [row[:k] for row in seeds]
            helper_blinds = [[b""] * k for _ in seeds]
            leader_blinds = [b""] * count
            prove_seeds = [row[k] for row in seeds]

        meas = bf.from_backend(f, np.concatenate(encoded)).reshape(count, self.flp.MEAS_LEN)
        meas_bytes = f.ENCODED_SIZE * self.flp.MEAS_LEN
        dst_meas = self._dst(USAGE_MEAS_SHARE, ctx)
        dst_proof = self._dst(USAGE_PROOF_SHARE, ctx)
        dst_part = self._dst(USAGE_JOINT_RAND_PART, ctx)
        leader_meas = meas
        parts: list[list[bytes]] = [[] for _ in range(count)]
        for j in range(1, k + 1):
            helper_meas = self._expand_rows(
                bf, [self.xof(row[j - 1], dst_meas, bytes([j])) for row in helper_shares], self.flp.MEAS_LEN
            )
            leader_meas = bf.sub(leader_meas, helper_meas)
            if uses_jr:
                enc = bf.encode_vec(helper_meas.reshape(-1))
                for b in range(count):
                    parts[b].append(self.xof.derive_seed(
                        helper_blinds[b][j - 1], dst_part, (bytes([j]) + nonces[b], enc[b * meas_bytes : (b + 1) * meas_bytes])
                    ))
        leader_enc = bf.encode_vec(leader_meas.reshape(-1))
        jl, pl = self.flp.JOINT_RAND_LEN, self.flp.PROVE_RAND_LEN
        proofs_byte = bytes([self.PROOFS])
        if uses_jr:
            dst_seed = self._dst(USAGE_JOINT_RAND_SEED, ctx)
            dst_jr = self._dst(USAGE_JOINT_RANDOMNESS, ctx)
            zero_seed = bytes(s)
            jr_xofs = []
            for b in range(count):
                parts[b].insert(0, self.xof.derive_seed(
                    leader_blinds[b], dst_part, (b"\x00" + nonces[b], leader_enc[b * meas_bytes : (b + 1) * meas_bytes])
                ))
                jr_xofs.append(self.xof(self.xof.derive_seed(zero_seed, dst_seed, b"".join(parts[b])), dst_jr, proofs_byte))
            joint_rands = self._expand_rows(bf, jr_xofs, jl * self.PROOFS)
        else:
            joint_rands = bf.zeros_shape((count, 0))
        dst_prove = self._dst(USAGE_PROVE_RANDOMNESS, ctx)
        prove_rands = self._expand_rows(bf, [self.xof(seed, dst_prove, proofs_byte) for seed in prove_seeds], pl * self.PROOFS)
        leader_proofs = np.concatenate(
            [
                self.flp.prove_rows(
                    bf, meas, prove_rands[:, i * pl : (i + 1) * pl], joint_rands[:, i * jl : (i + 1) * jl]
                )
                for i in range(self.PROOFS)
            ],
            axis=1,
        )
        for j in range(1, k + 1):
            helper_proofs = self._expand_rows(
                bf, [self.xof(row[j - 1], dst_proof, bytes([self.PROOFS, j])) for row in helper_shares],
                self.flp.PROOF_LEN * self.PROOFS,
            )
            leader_proofs = bf.sub(leader_proofs, helper_proofs)
        proof_enc = bf.encode_vec(leader_proofs.reshape(-1))
        proof_bytes = len(proof_enc) // count
        out = []
        for b in range(count):
            leader = (
                leader_enc[b * meas_bytes : (b + 1) * meas_bytes]
                + proof_enc[b * proof_bytes : (b + 1) * proof_bytes]
                + leader_blinds[b]
            )
            helpers = [share + blind for share, blind in zip(helper_shares[b], helper_blinds[b])]
            out.append((b"".join(parts[b]), [leader] + helpers))
        return out

    # ------------------------------------------------------------------ aggregators
    def verify_init_batch(
        self,
        verify_key: bytes,
        ctx: bytes,
        agg_id: int,
        agg_param: bytes,
        nonces: Sequence[bytes],
        public_shares: Sequence[bytes],
        input_shares: Sequence[bytes],
    ) -> list[tuple[Prio3VerifyState, bytes] | InvalidReport]:
        """`verify_init` for many reports of one task: entry b is what verify_init returns
        for report b, or the `InvalidReport` it raises (one bad report never fails the batch).

        Same bytes as report-by-report (draft Section 7.2.2); the work is done
        on 2-D arrays (row = report) on the field's long-vector backend:
        one decode of all leader shares (or of all XOF outputs), one batched
        FLP query per proof, one encoding of all verifier shares.  XOFs stay
        one per draft derivation and report (they are keyed per report).
        """
        if len(verify_key) != self.VERIFY_KEY_SIZE:
            raise ValueError("verify_key must be VERIFY_KEY_SIZE bytes")
        if not 0 <= agg_id < self.SHARES:
            raise ValueError("agg_id out of range")
        count = len(nonces)
        if len(public_shares) != count or len(input_shares) != count:
            raise ValueError("nonces, public_shares and input_shares must have the same length")
        # Bound the 2-D arrays (rows x measurement length): long measurements go in smaller slices.
        rows_per_slice = max(1, BATCH_MAX_ELEMENTS // max(self.flp.MEAS_LEN, self.flp.PROOF_LEN * self.PROOFS))
        if count > rows_per_slice:
            out: list[tuple[Prio3VerifyState, bytes] | InvalidReport] = []
            for lo in range(0, count, rows_per_slice):
                hi = lo + rows_per_slice
                out.extend(self.verify_init_batch(
                    verify_key, ctx, agg_id, agg_param, nonces[lo:hi], public_shares[lo:hi], input_shares[lo:hi]
                ))
            return out
        if self._fused:  # long reports fill the kernels on their own: report by report, helpers in two
            # passes that never hold the share (mpc/prio3/stream.py), the rest by the one-report path
            one = self._verify_init_streamed if self._streams_helper(agg_id) else self.verify_init
            return [self._verify_init_or_error(one, verify_key, ctx, agg_id, agg_param, n, p, i)
                    for n, p, i in zip(nonces, public_shares, input_shares)]
        f = self.field
        bf = f.LARGE
        s = self.xof.SEED_SIZE
        uses_jr = self._uses_jr
        blind_len = s if uses_jr else 0
        meas_bytes = f.ENCODED_SIZE * self.flp.MEAS_LEN
        proof_bytes = f.ENCODED_SIZE * self.flp.PROOF_LEN * self.PROOFS
        results: list[Any] = [None] * count
        rows: list[int] = []  # reports that decoded so far
        parts_of: list[list[bytes] | None] = []
        for b in range(count):
            try:
                if len(nonces[b]) != self.NONCE_SIZE:
                    raise DecodeError("nonce has the wrong length")
                self._check_agg_param(agg_param)
                parts = self._decode_public_share(public_shares[b])
                if agg_id == 0 and len(input_shares[b]) != meas_bytes + proof_bytes + blind_len:
                    raise DecodeError("leader input share has the wrong length")
                if agg_id != 0 and len(input_shares[b]) != s + blind_len:
                    raise DecodeError("helper input share has the wrong length")
            except DecodeError as exc:
                results[b] = exc
                continue
            rows.append(b)
            parts_of.append(parts)

        if agg_id == 0:
            views = [memoryview(input_shares[b]) for b in rows]  # slices without copies
            joined = views[0][: meas_bytes + proof_bytes] if len(rows) == 1 else b"".join(
                [v[: meas_bytes + proof_bytes] for v in views]
            )
            width = self.flp.MEAS_LEN + self.flp.PROOF_LEN * self.PROOFS
            if len(rows) == 1 and bf.DTYPE is not None:  # one (long) report: a read-only view, no copy
                cand = np.frombuffer(joined, dtype=bf.DTYPE).reshape(1, width)
                good = np.array([bf.all_canonical(cand)])
            else:
                cand, ok = bf.decode_unchecked(joined)
                cand = cand.reshape(len(rows), width)
                good = ok.reshape(len(rows), width).all(axis=1)
            del joined
            for i in np.flatnonzero(~good):
                results[rows[i]] = DecodeError(f"{f.NAME}: element >= modulus")
            if not good.all():
                keep = np.flatnonzero(good)
                rows = [rows[i] for i in keep]
                parts_of = [parts_of[i] for i in keep]
                cand = cand[keep]
            meas = cand[:, : self.flp.MEAS_LEN]
            proofs = cand[:, self.flp.MEAS_LEN :]
            blinds = [input_shares[b][meas_bytes + proof_bytes :] for b in rows]
            meas_enc = [memoryview(input_shares[b])[:meas_bytes] for b in rows]
        else:
            seeds = [input_shares[b][:s] for b in rows]
            blinds = [input_shares[b][s:] for b in rows]
            dst_meas, dst_proof = self._dst(USAGE_MEAS_SHARE, ctx), self._dst(USAGE_PROOF_SHARE, ctx)
            meas, raw = self._expand_rows_raw(
                bf, [self.xof(seed, dst_meas, bytes([agg_id])) for seed in seeds], self.flp.MEAS_LEN
            )
            proofs = self._expand_rows(
                bf, [self.xof(seed, dst_proof, bytes([self.PROOFS, agg_id])) for seed in seeds],
                self.flp.PROOF_LEN * self.PROOFS,
            )
            enc = raw if raw is not None else bf.encode_vec(meas.reshape(-1))  # the XOF stream is the encoding
            del raw
            enc_view = memoryview(enc)
            meas_enc = [enc_view[i * meas_bytes : (i + 1) * meas_bytes] for i in range(len(rows))]
        if not rows:
            return results

        jl, pl, ql = self.flp.JOINT_RAND_LEN, self.flp.PROOF_LEN, self.flp.QUERY_RAND_LEN
        proofs_byte = bytes([self.PROOFS])
        jr_parts: list[bytes] = [b""] * len(rows)
        seeds_corrected: list[bytes | None] = [None] * len(rows)
        joint_rands = bf.zeros_shape((len(rows), 0))
        if uses_jr:
            dst_part = self._dst(USAGE_JOINT_RAND_PART, ctx)
            dst_seed = self._dst(USAGE_JOINT_RAND_SEED, ctx)
            dst_jr = self._dst(USAGE_JOINT_RANDOMNESS, ctx)
            zero_seed = bytes(s)
            agg_byte = bytes([agg_id])
            jr_xofs = []
            for i, b in enumerate(rows):
                part = self.xof.derive_seed(blinds[i], dst_part, (agg_byte + nonces[b], meas_enc[i]))
                parts = list(parts_of[i])  # type: ignore[arg-type]
                parts[agg_id] = part
                seed = self.xof.derive_seed(zero_seed, dst_seed, b"".join(parts))
                jr_parts[i], seeds_corrected[i] = part, seed
                jr_xofs.append(self.xof(seed, dst_jr, proofs_byte))
            joint_rands = self._expand_rows(bf, jr_xofs, jl * self.PROOFS)
        dst_query = self._dst(USAGE_QUERY_RANDOMNESS, ctx)
        query_rands = self._expand_rows(
            bf, [self.xof(verify_key, dst_query, proofs_byte + nonces[b]) for b in rows], ql * self.PROOFS
        )

        verifiers = []
        hit = np.zeros(len(rows), dtype=bool)
        for i in range(self.PROOFS):
            ver, hit_i = self.flp.query_rows(
                bf,
                meas,
                proofs[:, i * pl : (i + 1) * pl],
                query_rands[:, i * ql : (i + 1) * ql],
                joint_rands[:, i * jl : (i + 1) * jl],
                self.SHARES,
            )
            verifiers.append(ver)
            hit |= hit_i
        ver_all = np.concatenate(verifiers, axis=1)
        ver_enc = bf.encode_vec(ver_all.reshape(-1))
        vlen = len(ver_enc) // len(rows)
        out = f.from_backend(bf, self.flp.valid.truncate_rows(bf, meas))
        for i, b in enumerate(rows):
            if hit[i]:
                results[b] = VerifyError("query randomness hit a root of unity")
                continue
            state = Prio3VerifyState(out[i], seeds_corrected[i])
            results[b] = (state, ver_enc[i * vlen : (i + 1) * vlen] + jr_parts[i])
        return results

    @staticmethod
    def _verify_init_or_error(
        verify_init: Callable[..., tuple[Prio3VerifyState, bytes]], *args: Any
    ) -> tuple[Prio3VerifyState, bytes] | InvalidReport:
        try:
            return verify_init(*args)
        except InvalidReport as exc:
            return exc

    def verifier_shares_to_message_batch(
        self, ctx: bytes, agg_param: bytes, verifier_shares: Sequence[Sequence[bytes]]
    ) -> list[bytes | InvalidReport]:
        """`verifier_shares_to_message` for many reports (entry b: the message or the
        `InvalidReport` it raises); all proofs are decided with one vectorised pass."""
        f = self.field
        bf = f.LARGE
        count = len(verifier_shares)
        results: list[Any] = [None] * count
        rows: list[int] = []
        raw: list[bytes] = []
        jparts: list[list[bytes]] = []
        vlen = f.ENCODED_SIZE * self.flp.VERIFIER_LEN * self.PROOFS
        jlen = self.xof.SEED_SIZE if self._uses_jr else 0
        for b, shares in enumerate(verifier_shares):
            if agg_param != b"" or len(shares) != self.SHARES or list(map(len, shares)).count(vlen + jlen) != self.SHARES:
                try:  # malformed: the single-report path names the first problem it meets
                    results[b] = self.verifier_shares_to_message(ctx, agg_param, list(shares))
                except InvalidReport as exc:
                    results[b] = exc
                continue
            rows.append(b)
            if jlen:
                raw.extend([v[:vlen] for v in shares])
                jparts.append([v[vlen:] for v in shares])
            else:
                raw.extend(shares)
        if not rows:
            return results
        width = self.flp.VERIFIER_LEN * self.PROOFS
        cand, ok = bf.decode_unchecked(b"".join(raw))
        cand = cand.reshape(len(rows), self.SHARES, width)
        good = ok.reshape(len(rows), self.SHARES * width).all(axis=1)
        total = cand[:, 0]
        for j in range(1, self.SHARES):
            total = bf.add(total, cand[:, j])
        vl = self.flp.VERIFIER_LEN
        accept = np.ones(len(rows), dtype=bool)
        for i in range(self.PROOFS):
            accept &= self.flp.decide_rows(bf, total[:, i * vl : (i + 1) * vl])
        dst_seed = self._dst(USAGE_JOINT_RAND_SEED, ctx)
        zero_seed = bytes(self.xof.SEED_SIZE)
        for i, b in enumerate(rows):
            if not good[i]:
                results[b] = DecodeError(f"{f.NAME}: element >= modulus")
            elif not accept[i]:
                results[b] = VerifyError("proof verifier check failed")
            elif self._uses_jr:
                results[b] = self.xof.derive_seed(zero_seed, dst_seed, b"".join(jparts[i]))
            else:
                results[b] = b""
        return results


__all__ = ["BATCH_MAX_ELEMENTS", "SHARD_BATCH_MAX_MEAS_LEN", "Prio3Batch"]
