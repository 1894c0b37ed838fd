"""Prio3 (draft-irtf-cfrg-vdaf-18, Section 7): an FLP turned into a one-round VDAF.

Roles (see mpc/vdaf.py):

* client:      `Prio3.shard` -> (public share, [leader share, helper seed shares...])
* aggregator:  `verify_init` -> (state, verifier share); `verify_next` -> output share
* leader:      `verifier_shares_to_message` -> verifier message (decides the proofs)
* collector:   `unshard`

Aggregators verifying many reports of one task (an aggregation job) call
`verify_init_batch` / `verifier_shares_to_message_batch`: the same bytes per
report, computed on (reports x elements) arrays, with one error object in
place of each malformed report.

Everything crossing a wire is bytes in the draft's encoding (Section 7.2.7);
decoders reject wrong lengths, trailing bytes and non-canonical field elements
with `DecodeError`; a failed proof or joint-randomness check raises
`VerifyError`.  Randomness is the caller's ``rand`` (RAND_SIZE bytes) so the
draft's vectors are reproducible; `Prio3.shard` callers in production pass
``os.urandom(vdaf.RAND_SIZE)``.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from twinmpc.crypto.field import Field64, Field64Small, Field128, Field128Limbs, _PrimeField
from twinmpc.crypto.field_native import Field64Native, Field128Native, kernel_enabled
from twinmpc.crypto.xof import Xof, XofTurboShake128
from twinmpc.mpc.errors import (
    DecodeError,
    InvalidMeasurement,
    InvalidReport,
    InvalidTask,
    VerifyError,
)
from twinmpc.mpc.prio3.circuits import (
    Count,
    FixedPointBoundedL2Vec,
    Histogram,
    MultihotCountVec,
    Sum,
    SumVec,
)
from twinmpc.mpc.prio3.flp import FlpBBCGGI19, Valid

# Draft-18 Section 6.2.3: format_dst(algo_class, algo, usage) starts with VERSION.
VERSION = 18
ALGO_CLASS_VDAF = 0

USAGE_MEAS_SHARE = 1
USAGE_PROOF_SHARE = 2
USAGE_JOINT_RANDOMNESS = 3
USAGE_PROVE_RANDOMNESS = 4
USAGE_QUERY_RANDOMNESS = 5
USAGE_JOINT_RAND_SEED = 6
USAGE_JOINT_RAND_PART = 7

M = TypeVar("M")
R = TypeVar("R")


# Above this many encoded-measurement elements, Field128 work runs on the uint64
# limb backend (faster on long vectors); below it on Python-int object arrays
# (less per-call overhead).  Both give identical bytes.
LIMB_BACKEND_MIN_LEN = 1024


# verify_init_batch works on (reports x measurement length) arrays; it slices a
# batch so that this product stays below this many elements (a few MB per array).
BATCH_MAX_ELEMENTS = 1 << 18


# shard_batch vectorises across reports below this measurement length; longer
# measurements fill the arrays on their own (measured: SumVec(1000, max 255),
# 8,000 elements, shards faster report by report; Histogram(1000) about even).
SHARD_BATCH_MAX_MEAS_LEN = 2048


def field128_backend(meas_len: int) -> type[_PrimeField]:
    """Field128 implementation suited to a circuit of this measurement length.

    The compiled kernel (crypto.field_native) wins at every size; the numpy
    reference path picks Python ints or limbs by size.
    """
    if kernel_enabled():
        return Field128Native
    return Field128Limbs if meas_len >= LIMB_BACKEND_MIN_LEN else Field128


# Below this many encoded-measurement elements, Field64 runs on object arrays.
UINT64_BACKEND_MIN_LEN = 256


def field64_backend(meas_len: int) -> type[_PrimeField]:
    """Field64 implementation suited to a circuit of this measurement length (as field128_backend)."""
    if kernel_enabled():
        return Field64Native
    return Field64 if meas_len >= UINT64_BACKEND_MIN_LEN else Field64Small


def format_dst(algo_class: int, algo: int, usage: int) -> bytes:
    """Domain separation tag prefix (draft Section 6.2.3)."""
    return bytes([VERSION, algo_class]) + algo.to_bytes(4, "big") + usage.to_bytes(2, "big")


class Prio3VerifyState(NamedTuple):
    """An aggregator's state between verify_init and verify_next (redacted in repr).

    A NamedTuple: immutable, and cheap to create for each report of a batch.
    """

    out_share: np.ndarray
    corrected_joint_rand_seed: bytes | None

    def __repr__(self) -> str:
        return "Prio3VerifyState(<redacted>)"


class Prio3(Generic[M, R]):
    """Generic Prio3 over a validity circuit; concrete variants below fix the circuit and ID."""

    NONCE_SIZE = 16
    ROUNDS = 1
    ID: int

    def __init__(self, shares: int, valid: Valid[M, R], num_proofs: int, algo_id: int, xof: type[Xof] = XofTurboShake128):
        if not isinstance(shares, int) or not 2 <= shares < 256:
            raise InvalidTask("Prio3 needs 2 <= shares < 256")
        if not isinstance(num_proofs, int) or not 1 <= num_proofs < 256:
            raise InvalidTask("Prio3 needs 1 <= num_proofs < 256")
        if not 0 <= algo_id < 2**32:
            raise InvalidTask("algorithm id must fit in 32 bits")
        self.SHARES = shares
        self.PROOFS = num_proofs
        self.ID = algo_id
        self.xof = xof
        self.flp = FlpBBCGGI19(valid)
        self.field: type[_PrimeField] = valid.field
        # Output and aggregate shares use one array type per field and kernel:
        # on the numpy path uint64 or object arrays whatever the compute backend,
        # on the native path the native arrays (same bytes; mpc.dp goes through to_ints).
        self.agg_field: type[_PrimeField] = Field128 if valid.field is Field128Limbs else valid.field
        seed = xof.SEED_SIZE
        self.VERIFY_KEY_SIZE = seed
        self.RAND_SIZE = seed * shares * (2 if self.flp.JOINT_RAND_LEN > 0 else 1)
        self._dst_cache: dict[tuple[int, bytes], bytes] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shares={self.SHARES}, proofs={self.PROOFS}, id={self.ID:#010x})"

    # ------------------------------------------------------------------ helpers
    def _dst(self, usage: int, ctx: bytes) -> bytes:
        key = (usage, ctx)
        dst = self._dst_cache.get(key)
        if dst is None:
            dst = format_dst(ALGO_CLASS_VDAF, self.ID, usage) + ctx
            if len(self._dst_cache) < 64:
                self._dst_cache[key] = dst
        return dst

    @property
    def _uses_jr(self) -> bool:
        return self.flp.JOINT_RAND_LEN > 0

    def _helper_meas_share(self, ctx: bytes, agg_id: int, share: bytes) -> tuple[np.ndarray, bytes | None]:
        """(helper's measurement share, its encoding when the XOF output needed no rejection).

        The encoding is the XOF stream itself then, so long shares are not encoded again."""
        xof = self.xof(share, self._dst(USAGE_MEAS_SHARE, ctx), bytes([agg_id]))
        meas, raw = self._expand_rows_raw(self.field, [xof], self.flp.MEAS_LEN)
        return meas[0], raw

    def _helper_proofs_share(self, ctx: bytes, agg_id: int, share: bytes) -> np.ndarray:
        return self.xof.expand_into_vec(
            self.field,
            share,
            self._dst(USAGE_PROOF_SHARE, ctx),
            bytes([self.PROOFS, agg_id]),
            self.flp.PROOF_LEN * self.PROOFS,
        )

    def _prove_rands(self, ctx: bytes, seed: bytes) -> np.ndarray:
        return self.xof.expand_into_vec(
            self.field, seed, self._dst(USAGE_PROVE_RANDOMNESS, ctx), bytes([self.PROOFS]),
            self.flp.PROVE_RAND_LEN * self.PROOFS,
        )

    def _query_rands(self, verify_key: bytes, ctx: bytes, nonce: bytes) -> np.ndarray:
        return self.xof.expand_into_vec(
            self.field, verify_key, self._dst(USAGE_QUERY_RANDOMNESS, ctx), bytes([self.PROOFS]) + nonce,
            self.flp.QUERY_RAND_LEN * self.PROOFS,
        )

    def _joint_rand_part(self, ctx: bytes, agg_id: int, blind: bytes, meas_enc: bytes | memoryview, nonce: bytes) -> bytes:
        """The draft's joint randomness part of an aggregator's measurement share, given the share's
        encoding (long shares are passed as the bytes at hand instead of being encoded again)."""
        return self.xof.derive_seed(blind, self._dst(USAGE_JOINT_RAND_PART, ctx), bytes([agg_id]) + nonce + meas_enc)

    def _joint_rand_seed(self, ctx: bytes, parts: Sequence[bytes]) -> bytes:
        return self.xof.derive_seed(bytes(self.xof.SEED_SIZE), self._dst(USAGE_JOINT_RAND_SEED, ctx), b"".join(parts))

    def _joint_rands(self, ctx: bytes, seed: bytes) -> np.ndarray:
        return self.xof.expand_into_vec(
            self.field, seed, self._dst(USAGE_JOINT_RANDOMNESS, ctx), bytes([self.PROOFS]),
            self.flp.JOINT_RAND_LEN * self.PROOFS,
        )

    # ------------------------------------------------------------------ client
    def shard(self, ctx: bytes, measurement: M, nonce: bytes, rand: bytes) -> tuple[bytes, list[bytes]]:
        """Client: encode, secret-share, prove (draft Section 7.2.1)."""
        meas = self.flp.encode(measurement)
        return self.shard_encoded(ctx, meas, nonce, rand)

    def shard_encoded(self, ctx: bytes, meas: np.ndarray, nonce: bytes, rand: bytes) -> tuple[bytes, list[bytes]]:
        """Shard an already encoded measurement (also how tests play a malicious client).

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

        # Long measurements: at most the measurement, one share and one encoding live at a time.
        leader_meas = meas
        parts: list[bytes] = []
        for j, share in enumerate(helper_shares, start=1):
            helper_meas, helper_enc = self._helper_meas_share(ctx, j, share)
            if self._uses_jr:
                enc = helper_enc if helper_enc is not None else f.encode_vec(helper_meas)
                parts.append(self._joint_rand_part(ctx, j, helper_blinds[j - 1], enc, nonce))
            del helper_enc
            leader_meas = f.sub(leader_meas, helper_meas)
            del helper_meas
        leader_enc = f.encode_vec(leader_meas)
        del leader_meas
        if self._uses_jr:
            parts.insert(0, self._joint_rand_part(ctx, 0, leader_blind, leader_enc, nonce))
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

        leader = leader_enc + f.encode_vec(leader_proofs) + leader_blind
        helpers = [share + blind for share, blind in zip(helper_shares, helper_blinds or [b""] * k)]
        return b"".join(parts), [leader] + helpers

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
                    meas = self.flp.encode(m)
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
                        helper_blinds[b][j - 1], dst_part, bytes([j]) + nonces[b] + enc[b * meas_bytes : (b + 1) * meas_bytes]
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
                    leader_blinds[b], dst_part, b"\x00" + nonces[b] + leader_enc[b * meas_bytes : (b + 1) * meas_bytes]
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

    # ------------------------------------------------------------------ decoding
    def _decode_public_share(self, encoded: bytes) -> list[bytes] | None:
        s = self.xof.SEED_SIZE
        if not self._uses_jr:
            if encoded:
                raise DecodeError("public share must be empty for this Prio3 variant")
            return None
        if len(encoded) != s * self.SHARES:
            raise DecodeError("public share has the wrong length")
        return [encoded[i : i + s] for i in range(0, len(encoded), s)]

    def _decode_input_share(
        self, ctx: bytes, agg_id: int, encoded: bytes
    ) -> tuple[np.ndarray, np.ndarray, bytes, memoryview | None]:
        """(measurement share, proofs share, blind, the share's encoding when at hand: the leader's
        bytes as received, the helper's XOF stream)."""
        f = self.field
        s = self.xof.SEED_SIZE
        blind_len = s if self._uses_jr else 0
        if agg_id == 0:
            meas_len = f.ENCODED_SIZE * self.flp.MEAS_LEN
            proof_len = f.ENCODED_SIZE * self.flp.PROOF_LEN * self.PROOFS
            if len(encoded) != meas_len + proof_len + blind_len:
                raise DecodeError("leader input share has the wrong length")
            view = memoryview(encoded)  # slices without copies (the share can be tens of MB)
            meas = f.decode_vec(view[:meas_len])
            proofs = f.decode_vec(view[meas_len : meas_len + proof_len])
            return meas, proofs, encoded[meas_len + proof_len :], view[:meas_len]
        if len(encoded) != s + blind_len:
            raise DecodeError("helper input share has the wrong length")
        share = encoded[:s]
        meas, raw = self._helper_meas_share(ctx, agg_id, share)
        return meas, self._helper_proofs_share(ctx, agg_id, share), encoded[s:], None if raw is None else memoryview(raw)

    def _check_agg_param(self, agg_param: bytes) -> None:
        if agg_param != b"":
            raise DecodeError("Prio3 takes no aggregation parameter")

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
        meas_share, proofs_share, blind, meas_enc = self._decode_input_share(ctx, agg_id, input_share)
        out_share = self.flp.truncate(meas_share)

        corrected_seed: bytes | None = None
        jr_part = b""
        joint_rands = f.zeros(0)
        if parts is not None:  # this variant uses joint randomness
            jr_part = self._joint_rand_part(
                ctx, agg_id, blind, meas_enc if meas_enc is not None else f.encode_vec(meas_share), nonce
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

    # ------------------------------------------------------------------ batches
    def _expand_rows(self, field: type[_PrimeField], xofs: list[Xof], length: int) -> np.ndarray:
        """Row b = xofs[b].next_vec(field, length): one decode for all rows (see _expand_rows_raw)."""
        return self._expand_rows_raw(field, xofs, length)[0]

    def _expand_rows_raw(self, field: type[_PrimeField], xofs: list[Xof], length: int) -> tuple[np.ndarray, bytes | None]:
        """(rows, the XOF bytes they were decoded from, or None if a candidate was rejected).

        Each XOF is read once for `length` elements; a row with a rejected
        candidate (probability ~2^-32 per Field64 element) keeps its valid
        candidates and continues with next_vec on the same XOF, which is
        exactly the draft's sampling loop.  Without rejections the bytes are
        the rows' encoding, which callers reuse instead of encoding again.
        """
        size = field.ENCODED_SIZE
        raw = b"".join([x.next(length * size) for x in xofs])
        cand, ok = field.decode_unchecked(raw)
        cand = cand.reshape(len(xofs), length)
        ok = ok.reshape(len(xofs), length)
        bad = np.flatnonzero(~ok.all(axis=1))
        for b in bad:
            keep = cand[b][ok[b]]
            cand[b] = np.concatenate([keep, xofs[b].next_vec(field, length - keep.shape[0])])
        return cand, (None if bad.size else raw)

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
            cand, ok = bf.decode_unchecked(joined)
            del joined
            width = self.flp.MEAS_LEN + self.flp.PROOF_LEN * self.PROOFS
            cand = cand.reshape(len(rows), width)
            good = ok.reshape(len(rows), width).all(axis=1)
            for i in np.flatnonzero(~good):
                results[rows[i]] = DecodeError(f"{f.NAME}: element >= modulus")
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
                part = self.xof.derive_seed(blinds[i], dst_part, agg_byte + nonces[b] + meas_enc[i])
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

    def _decode_verifier_share(self, encoded: bytes) -> tuple[np.ndarray, bytes]:
        f = self.field
        vlen = f.ENCODED_SIZE * self.flp.VERIFIER_LEN * self.PROOFS
        jlen = self.xof.SEED_SIZE if self._uses_jr else 0
        if len(encoded) != vlen + jlen:
            raise DecodeError("verifier share has the wrong length")
        return f.decode_vec(encoded[:vlen]), encoded[vlen:]

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


# ---------------------------------------------------------------------- variants
class Prio3Count(Prio3[int, int]):
    """Draft Section 7.4.1, ID 0x00000001, Field64, 1 proof."""

    def __init__(self, shares: int) -> None:
        super().__init__(shares, Count(field64_backend(1)), 1, 0x00000001)


class Prio3Sum(Prio3[int, int]):
    """Draft Section 7.4.2, ID 0x00000002, Field64, 1 proof."""

    def __init__(self, shares: int, max_measurement: int) -> None:
        _check_pos_int("max_measurement", max_measurement)
        try:
            valid = Sum(field64_backend(max_measurement.bit_length()), max_measurement)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, 1, 0x00000002)


class Prio3SumVec(Prio3[list[int], list[int]]):
    """Draft Section 7.4.3, ID 0x00000003, Field128, 1 proof."""

    def __init__(self, shares: int, length: int, max_measurement: int, chunk_length: int) -> None:
        for name, v in (("length", length), ("max_measurement", max_measurement), ("chunk_length", chunk_length)):
            _check_pos_int(name, v)
        try:
            bits = max_measurement.bit_length()
            valid = SumVec(field128_backend(length * bits), length, max_measurement, chunk_length)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, 1, 0x00000003)


class Prio3Histogram(Prio3[int, list[int]]):
    """Draft Section 7.4.4, ID 0x00000004, Field128, 1 proof."""

    def __init__(self, shares: int, length: int, chunk_length: int) -> None:
        for name, v in (("length", length), ("chunk_length", chunk_length)):
            _check_pos_int(name, v)
        try:
            valid = Histogram(field128_backend(length), length, chunk_length)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, 1, 0x00000004)


class Prio3MultihotCountVec(Prio3[list[int], list[int]]):
    """Draft Section 7.4.5, ID 0x00000005, Field128, 1 proof."""

    def __init__(self, shares: int, length: int, max_weight: int, chunk_length: int) -> None:
        for name, v in (("length", length), ("max_weight", max_weight), ("chunk_length", chunk_length)):
            _check_pos_int(name, v)
        try:
            valid = MultihotCountVec(field128_backend(length), length, max_weight, chunk_length)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, 1, 0x00000005)


class Prio3SumVecWithMultiproof(Prio3[list[int], list[int]]):
    """Draft Section 7.4.3 with a smaller field and several proofs (test codepoint 0xFFFFFFFF).

    The draft's vectors use Field64 with 3 proofs; see docs/prio3.md for the
    robustness trade-off (Section 9.7 of the draft).
    """

    def __init__(
        self,
        shares: int,
        length: int,
        max_measurement: int,
        chunk_length: int,
        num_proofs: int = 3,
        field: type[_PrimeField] = Field64,
    ) -> None:
        for name, v in (("length", length), ("max_measurement", max_measurement), ("chunk_length", chunk_length)):
            _check_pos_int(name, v)
        if field not in (Field64, Field128):
            raise InvalidTask("field must be Field64 or Field128")
        if field is Field64 and num_proofs < 2:
            raise InvalidTask("Field64 needs at least 2 proofs for the draft's robustness bound")
        try:
            meas_len = length * max_measurement.bit_length()
            field = field128_backend(meas_len) if field is Field128 else field64_backend(meas_len)
            valid = SumVec(field, length, max_measurement, chunk_length)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, num_proofs, 0xFFFFFFFF)


class Prio3FixedPointBoundedL2Vec(Prio3[Sequence[float], list[float]]):
    """Our extension (private codepoint 0xFFFF1000, Field128): see docs/prio3.md."""

    def __init__(
        self,
        shares: int,
        length: int,
        frac_bits: int,
        chunk_length: int,
        norm_chunk_length: int,
        max_norm_sq: Fraction | int | str = 1,
        num_proofs: int = 1,
    ) -> None:
        for name, v in (("length", length), ("frac_bits", frac_bits), ("chunk_length", chunk_length),
                        ("norm_chunk_length", norm_chunk_length)):
            _check_pos_int(name, v)
        try:
            valid = FixedPointBoundedL2Vec(
                field128_backend(length * (frac_bits + 1)), length, frac_bits, chunk_length, norm_chunk_length,
                Fraction(max_norm_sq),
            )
        except (ValueError, ZeroDivisionError) as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, num_proofs, 0xFFFF1000)
        self.valid = valid


def _check_pos_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidTask(f"{name} must be a positive integer")


__all__ = [
    "VERSION",
    "Prio3",
    "Prio3Count",
    "Prio3FixedPointBoundedL2Vec",
    "Prio3Histogram",
    "Prio3MultihotCountVec",
    "Prio3Sum",
    "Prio3SumVec",
    "Prio3SumVecWithMultiproof",
    "Prio3VerifyState",
    "format_dst",
]
