"""The machinery both report paths of Prio3 share (draft-irtf-cfrg-vdaf-18, Section 7.2).

Parameters and sizes, the draft's XOF derivations (measurement and proof
shares of helpers, prove/query/joint randomness), reading XOF output as rows
of field elements, and the decoders of public, input and verifier shares.
`Prio3` (mpc/prio3/prio3.py) adds the one-report path on top of it,
`Prio3Batch` (mpc/prio3/batch.py) the many-reports path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, NamedTuple, TypeVar

import numpy as np

from twinmpc.crypto.field import Field128, _PrimeField
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.xof import Xof, XofTurboShake128, native_xof_available
from twinmpc.mpc.errors import DecodeError, InvalidTask
from twinmpc.mpc.prio3.flp import FlpBBCGGI19, Valid
from twinmpc.mpc.prio3.params import (
    ALGO_CLASS_VDAF,
    USAGE_JOINT_RAND_PART,
    USAGE_JOINT_RAND_SEED,
    USAGE_JOINT_RANDOMNESS,
    USAGE_MEAS_SHARE,
    USAGE_PROOF_SHARE,
    USAGE_PROVE_RANDOMNESS,
    USAGE_QUERY_RANDOMNESS,
    format_dst,
)

# From this many measurement elements, native fields expand helper shares with the compiled
# fused kernel (crypto/xof_kernel.c): share, its joint-randomness part and the leader's share in
# one pass, the XOF streams on SIMD lanes.  Shorter reports keep the per-call-cheap path.
FUSED_MIN_MEAS_LEN = 4096

M = TypeVar("M")
R = TypeVar("R")


class Prio3VerifyState(NamedTuple):
    """An aggregator's state between verify_init and verify_next (redacted in repr).

    A NamedTuple: immutable, and cheap to create for each report of a batch.
    """

    out_share: np.ndarray
    corrected_joint_rand_seed: bytes | None

    def __repr__(self) -> str:
        return "Prio3VerifyState(<redacted>)"


class Prio3Base(Generic[M, R]):
    """Prio3's parameters and the derivations and decoders its one-report and batched paths share."""

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
        # The fused share kernel: native field, the draft's TurboSHAKE XOF, a long measurement.
        self._fused = (
            self.field.NATIVE and xof is XofTurboShake128 and native_xof_available()
            and self.flp.MEAS_LEN >= FUSED_MIN_MEAS_LEN
        )

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

    def _helper_meas_share(self, ctx: bytes, agg_id: int, share: bytes) -> tuple[np.ndarray, memoryview | None]:
        """(helper's measurement share, its encoding when the XOF output needed no rejection).

        The encoding is the XOF stream itself then, so long shares are not encoded again."""
        xof = self.xof(share, self._dst(USAGE_MEAS_SHARE, ctx), bytes([agg_id]))
        meas, raw = self._expand_rows_raw(self.field, [xof], self.flp.MEAS_LEN)
        return meas[0], raw

    def _shard_meas(
        self, ctx: bytes, meas: np.ndarray, nonce: bytes, helper_shares: list[bytes], helper_blinds: list[bytes],
        leader_blind: bytes,
    ) -> tuple[np.ndarray, list[bytes]]:
        """(leader's measurement share, joint-randomness parts in aggregator order, or [] without
        joint randomness).  Long measurements: at most the measurement, one share and the
        leader's running share live at a time."""
        f = self.field
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
        if self._uses_jr:
            parts.insert(0, self._joint_rand_part(ctx, 0, leader_blind, self._encoding(f, leader_meas), nonce))
        return leader_meas, parts

    def _shard_meas_fused(
        self, ctx: bytes, meas: np.ndarray, nonce: bytes, helper_shares: list[bytes], helper_blinds: list[bytes],
        leader_blind: bytes,
    ) -> tuple[np.ndarray, list[bytes]]:
        """`_shard_meas` with the compiled fused kernel: each helper's share is squeezed,
        hashed into its part and subtracted in one pass, the last one also hashing the leader's
        share into the leader's part (three XOF streams on SIMD lanes)."""
        f = self.field
        n = self.flp.MEAS_LEN
        dst_meas, dst_part = self._dst(USAGE_MEAS_SHARE, ctx), self._dst(USAGE_JOINT_RAND_PART, ctx)
        lead = np.empty(n, dtype=f.DTYPE)
        leader_xof = XofTurboShake128.native(leader_blind, dst_part, b"\x00" + nonce) if self._uses_jr else None
        parts: list[bytes] = []
        src = meas
        for j, share in enumerate(helper_shares, start=1):
            helper_xof = XofTurboShake128.native(share, dst_meas, bytes([j]))
            part_xof = XofTurboShake128.native(helper_blinds[j - 1], dst_part, bytes([j]) + nonce) if self._uses_jr else None
            last = j == len(helper_shares)
            f.expand_share(helper_xof, n, None, part_xof, src, lead, leader_xof if last else None)  # type: ignore[attr-defined]
            src = lead
            if part_xof is not None:
                parts.append(part_xof.read(self.xof.SEED_SIZE))
        if leader_xof is not None:
            parts.insert(0, leader_xof.read(self.xof.SEED_SIZE))
        return lead, parts

    def _helper_meas_share_fused(
        self, ctx: bytes, agg_id: int, share: bytes, blind: bytes, nonce: bytes
    ) -> tuple[np.ndarray, bytes | None]:
        """(helper's measurement share, its joint-randomness part or None) in one compiled pass:
        the share's XOF and the part's XOF run on SIMD lanes, the share is never re-read."""
        f = self.field
        n = self.flp.MEAS_LEN
        part_xof = None
        if self._uses_jr:
            part_xof = XofTurboShake128.native(blind, self._dst(USAGE_JOINT_RAND_PART, ctx), bytes([agg_id]) + nonce)
        meas = np.empty(n, dtype=f.DTYPE)
        f.expand_share(  # type: ignore[attr-defined]
            XofTurboShake128.native(share, self._dst(USAGE_MEAS_SHARE, ctx), bytes([agg_id])), n, meas, part_xof
        )
        return meas, None if part_xof is None else part_xof.read(self.xof.SEED_SIZE)

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
        encoding (long shares are passed as the bytes at hand instead of being encoded again, and
        hashed as a part of the binder rather than copied into it)."""
        binder = (bytes([agg_id]) + nonce, meas_enc)
        if self._fused:  # the compiled XOF: faster on one long stream, and it releases the GIL
            return XofTurboShake128.native(blind, self._dst(USAGE_JOINT_RAND_PART, ctx), binder).read(self.xof.SEED_SIZE)
        return self.xof.derive_seed(blind, self._dst(USAGE_JOINT_RAND_PART, ctx), binder)

    def _joint_rand_seed(self, ctx: bytes, parts: Sequence[bytes]) -> bytes:
        return self.xof.derive_seed(bytes(self.xof.SEED_SIZE), self._dst(USAGE_JOINT_RAND_SEED, ctx), b"".join(parts))

    def _joint_rands(self, ctx: bytes, seed: bytes) -> np.ndarray:
        return self.xof.expand_into_vec(
            self.field, seed, self._dst(USAGE_JOINT_RANDOMNESS, ctx), bytes([self.PROOFS]),
            self.flp.JOINT_RAND_LEN * self.PROOFS,
        )

    # ------------------------------------------------------------------ XOF output as rows
    def _expand_rows(self, field: type[_PrimeField], xofs: list[Xof], length: int) -> np.ndarray:
        """Row b = xofs[b].next_vec(field, length): one decode for all rows (see _expand_rows_raw)."""
        return self._expand_rows_raw(field, xofs, length)[0]

    def _expand_rows_raw(
        self, field: type[_PrimeField], xofs: list[Xof], length: int
    ) -> tuple[np.ndarray, memoryview | None]:
        """(rows, the XOF bytes they were decoded from, or None if a candidate was rejected).

        Each XOF is read once for `length` elements; a row with a rejected
        candidate (probability ~2^-32 per Field64 element) keeps its valid
        candidates and continues with next_vec on the same XOF, which is
        exactly the draft's sampling loop.  Without rejections the bytes are
        the rows' encoding, which callers reuse instead of encoding again.
        Fields stored as their encoding (`DTYPE`) are read straight into the
        rows, which are then that encoding (no bytes object, no decoding copy).
        """
        size = field.ENCODED_SIZE
        if field.DTYPE is not None:
            rows = np.empty((len(xofs), length), dtype=field.DTYPE)
            bad = []
            for b, x in enumerate(xofs):
                x.next_into(rows[b])
                if not field.all_canonical(rows[b]):
                    bad.append(b)
            for b in bad:
                keep = rows[b][field.decode_unchecked(rows[b].view(np.uint8))[1]]
                rows[b] = np.concatenate([keep, xofs[b].next_vec(field, length - keep.shape[0])])
            return rows, (None if bad else memoryview(rows.view(np.uint8).reshape(-1)))
        raw = b"".join([x.next(length * size) for x in xofs])
        cand, ok = field.decode_unchecked(raw)
        cand = cand.reshape(len(xofs), length)
        ok = ok.reshape(len(xofs), length)
        bad_rows = np.flatnonzero(~ok.all(axis=1))
        for b in bad_rows:
            keep = cand[b][ok[b]]
            cand[b] = np.concatenate([keep, xofs[b].next_vec(field, length - keep.shape[0])])
        return cand, (None if bad_rows.size else memoryview(raw))

    @staticmethod
    def _encoding(field: type[_PrimeField], vec: np.ndarray) -> bytes | memoryview:
        """The encoding of a vector: its own bytes where the storage is the encoding (no copy;
        valid while `vec` is), else `encode_vec`."""
        if field.DTYPE is not None:
            return memoryview(np.ascontiguousarray(vec, dtype=field.DTYPE).view(np.uint8).reshape(-1))
        return field.encode_vec(vec)

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
        self, ctx: bytes, agg_id: int, encoded: bytes, nonce: bytes
    ) -> tuple[np.ndarray, np.ndarray, bytes, memoryview | None, bytes | None]:
        """(measurement share, proofs share, blind, the share's encoding when at hand: the leader's
        bytes as received, the helper's XOF stream; the helper's joint-randomness part when the
        fused kernel computed it on the way)."""
        f = self.field
        s = self.xof.SEED_SIZE
        blind_len = s if self._uses_jr else 0
        if agg_id == 0:
            meas_len = f.ENCODED_SIZE * self.flp.MEAS_LEN
            proof_len = f.ENCODED_SIZE * self.flp.PROOF_LEN * self.PROOFS
            if len(encoded) != meas_len + proof_len + blind_len:
                raise DecodeError("leader input share has the wrong length")
            view = memoryview(encoded)  # slices without copies (the share can be tens of MB)
            meas = f.view_vec(view[:meas_len])  # read-only view of `encoded` where the field allows
            proofs = f.decode_vec(view[meas_len : meas_len + proof_len])
            return meas, proofs, encoded[meas_len + proof_len :], view[:meas_len], None
        if len(encoded) != s + blind_len:
            raise DecodeError("helper input share has the wrong length")
        share, blind = encoded[:s], encoded[s:]
        proofs = self._helper_proofs_share(ctx, agg_id, share)
        if self._fused:
            meas, part = self._helper_meas_share_fused(ctx, agg_id, share, blind, nonce)
            return meas, proofs, blind, None, part
        meas, raw = self._helper_meas_share(ctx, agg_id, share)
        return meas, proofs, blind, raw, None

    def _decode_verifier_share(self, encoded: bytes) -> tuple[np.ndarray, bytes]:
        f = self.field
        vlen = f.ENCODED_SIZE * self.flp.VERIFIER_LEN * self.PROOFS
        jlen = self.xof.SEED_SIZE if self._uses_jr else 0
        if len(encoded) != vlen + jlen:
            raise DecodeError("verifier share has the wrong length")
        return f.decode_vec(encoded[:vlen]), encoded[vlen:]

    def _check_agg_param(self, agg_param: bytes) -> None:
        if agg_param != b"":
            raise DecodeError("Prio3 takes no aggregation parameter")


__all__ = ["FUSED_MIN_MEAS_LEN", "M", "Prio3Base", "Prio3VerifyState", "R"]
