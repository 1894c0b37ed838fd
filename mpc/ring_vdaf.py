"""TwinRing64: additive sharing over Z/2^64 in the VDAF syntax, without proofs.

The fast scheme for trusted-hardware edge nodes and for federated model
updates where Prio3's proofs are too costly.  It hides every measurement from
any K-1 aggregators, but cannot stop a malicious client from submitting an
out-of-range value: tasks that need robustness use Prio3 (`mpc.prio3`).

Shares (Section 5 syntax of draft-irtf-cfrg-vdaf-18)::

    public_share   = b""
    input_share[0] = leader's explicit vector, 8 bytes LE per element
    input_share[j] = 32-byte seed, j = 1..K-1

The verification round is structural: every aggregator's verifier share is a
digest of (ctx, nonce, public share, length), so the leader learns whether
all aggregators are looking at the same report; for one-hot types
(histograms) it also carries a share of the sum of the entries, which must
be exactly 1 (a weight check that leaks nothing for honest clients).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinmpc.crypto import prg, ring, sharing
from twinmpc.mpc.errors import DecodeError, InvalidReport, VerifyError
from twinmpc.mpc.measurements import Histogram, MeasurementType

_DIGEST_SIZE = 16


@dataclass(frozen=True)
class _VerifyState:
    out_share: np.ndarray

    def __repr__(self) -> str:
        return "_VerifyState(out_share=<redacted>)"


class TwinRing64:
    """One-round additive sharing scheme over Z/2^64 (no validity proofs)."""

    ID = 0xFFFF0001  # private-use range of the VDAF codepoint space
    ROUNDS = 1
    NONCE_SIZE = 16
    VERIFY_KEY_SIZE = 0

    def __init__(self, measurement: MeasurementType, shares: int) -> None:
        if not 2 <= shares <= 255:
            raise ValueError("TwinRing64 supports 2..255 aggregators")
        self.measurement = measurement
        self.SHARES = shares
        self.RAND_SIZE = (shares - 1) * prg.SEED_SIZE
        self._weight_check = isinstance(measurement, Histogram)

    def __repr__(self) -> str:
        return f"TwinRing64({self.measurement!r}, shares={self.SHARES})"

    @staticmethod
    def _binder(ctx: bytes, nonce: bytes) -> bytes:
        return struct.pack(">H", len(ctx)) + ctx + nonce

    def shard_batch(
        self, ctx: bytes, measurements: Sequence[Any], nonces: Sequence[bytes], rands: Sequence[bytes]
    ) -> list[tuple[bytes, list[bytes]]]:
        """`shard` per measurement (sharing is one PRG expansion per helper; nothing to batch)."""
        if not len(measurements) == len(nonces) == len(rands):
            raise ValueError("measurements, nonces and rands must have the same length")
        return [self.shard(ctx, m, n, r) for m, n, r in zip(measurements, nonces, rands)]

    def shard(self, ctx: bytes, measurement: Any, nonce: bytes, rand: bytes | None = None) -> tuple[bytes, list[bytes]]:
        """Client: encode and split; `rand` is K-1 seeds (fresh from the OS if None)."""
        if len(nonce) != self.NONCE_SIZE:
            raise ValueError("nonce must be 16 bytes")
        if rand is None:
            rand = os.urandom(self.RAND_SIZE)
        if len(rand) != self.RAND_SIZE:
            raise ValueError(f"rand must be {self.RAND_SIZE} bytes")
        encoded = self.measurement.encode(measurement)
        seeds = iter(rand[i : i + prg.SEED_SIZE] for i in range(0, len(rand), prg.SEED_SIZE))
        leader, helper_seeds = sharing.split(encoded, self.SHARES, self._binder(ctx, nonce), rand=lambda _n: next(seeds))
        return b"", [ring.encode(leader), *helper_seeds]

    def input_share_size(self, agg_id: int) -> int:
        """Encoded size of aggregator `agg_id`'s input share (checked on upload)."""
        return self.measurement.length * ring.ELEMENT_SIZE if agg_id == 0 else prg.SEED_SIZE

    def _expand(self, ctx: bytes, agg_id: int, nonce: bytes, input_share: bytes) -> np.ndarray:
        if agg_id == 0:
            return ring.decode(input_share, self.measurement.length)
        if len(input_share) != prg.SEED_SIZE:
            raise DecodeError(f"helper input share must be a {prg.SEED_SIZE}-byte seed, got {len(input_share)} bytes")
        return sharing.expand_helper_share(input_share, self._binder(ctx, nonce), agg_id, self.measurement.length)

    def verify_init(
        self, verify_key: bytes, ctx: bytes, agg_id: int, agg_param: bytes, nonce: bytes, public_share: bytes, input_share: bytes
    ) -> tuple[_VerifyState, bytes]:
        """Aggregator: expand own share, emit the structural verifier share."""
        if not 0 <= agg_id < self.SHARES:
            raise ValueError(f"aggregator id {agg_id} out of range")
        if public_share:
            raise DecodeError("TwinRing64 public share must be empty")
        out_share = self._expand(ctx, agg_id, nonce, input_share)
        digest = hashlib.sha256(self._binder(ctx, nonce) + struct.pack(">I", self.measurement.length)).digest()[:_DIGEST_SIZE]
        verifier = digest
        if self._weight_check:
            verifier += ring.encode(np.array([out_share.sum(dtype=ring.DTYPE)], dtype=ring.DTYPE))
        return _VerifyState(out_share), verifier

    def verify_init_batch(
        self,
        verify_key: bytes,
        ctx: bytes,
        agg_id: int,
        agg_param: bytes,
        nonces: Sequence[bytes],
        public_shares: Sequence[bytes],
        input_shares: Sequence[bytes],
    ) -> list[tuple[_VerifyState, bytes] | InvalidReport]:
        """`verify_init` per report (no proof work to share across reports), so callers can
        always take the batch path; entry b is the result or the `InvalidReport` it raised."""
        if not len(nonces) == len(public_shares) == len(input_shares):
            raise ValueError("nonces, public_shares and input_shares must have the same length")
        out: list[tuple[_VerifyState, bytes] | InvalidReport] = []
        for nonce, public_share, input_share in zip(nonces, public_shares, input_shares):
            try:
                out.append(self.verify_init(verify_key, ctx, agg_id, agg_param, nonce, public_share, input_share))
            except InvalidReport as exc:
                out.append(exc)
        return out

    def verifier_shares_to_message_batch(
        self, ctx: bytes, agg_param: bytes, verifier_shares: Sequence[list[bytes]]
    ) -> list[bytes | InvalidReport]:
        """`verifier_shares_to_message` per report; entry b is the message or the `InvalidReport`."""
        out: list[bytes | InvalidReport] = []
        for shares in verifier_shares:
            try:
                out.append(self.verifier_shares_to_message(ctx, agg_param, shares))
            except InvalidReport as exc:
                out.append(exc)
        return out

    def verifier_shares_to_message(self, ctx: bytes, agg_param: bytes, verifier_shares: list[bytes]) -> bytes:
        """Leader: all aggregators must agree on the report; one-hot weight must be 1."""
        if len(verifier_shares) != self.SHARES:
            raise VerifyError(f"expected {self.SHARES} verifier shares, got {len(verifier_shares)}")
        size = _DIGEST_SIZE + (8 if self._weight_check else 0)
        if any(len(v) != size for v in verifier_shares):
            raise DecodeError("verifier share has the wrong length")
        first = verifier_shares[0][:_DIGEST_SIZE]
        if not all(hmac.compare_digest(first, v[:_DIGEST_SIZE]) for v in verifier_shares[1:]):
            raise VerifyError("aggregators disagree on the report being verified")
        if self._weight_check:
            weight = sum(int.from_bytes(v[_DIGEST_SIZE:], "little") for v in verifier_shares) % ring.MODULUS
            if weight != 1:
                raise VerifyError("one-hot measurement does not have weight 1")
        return b""

    def verify_next(self, ctx: bytes, state: _VerifyState, verifier_message: bytes) -> np.ndarray:
        if verifier_message != b"":
            raise DecodeError("TwinRing64 verifier message must be empty")
        return state.out_share

    def agg_init(self, agg_param: bytes) -> np.ndarray:
        return ring.zeros(self.measurement.length)

    def agg_update(self, agg_param: bytes, agg_share: np.ndarray, out_share: np.ndarray) -> np.ndarray:
        np.add(agg_share, out_share, out=agg_share)
        return agg_share

    def merge(self, agg_param: bytes, agg_shares: list[np.ndarray]) -> np.ndarray:
        return sharing.combine(agg_shares)

    def encode_agg_share(self, agg_share: np.ndarray) -> bytes:
        return ring.encode(agg_share)

    def decode_agg_share(self, encoded: bytes) -> np.ndarray:
        return ring.decode(encoded, self.measurement.length)

    def unshard(self, agg_param: bytes, agg_shares: list[bytes], num_measurements: int) -> Any:
        total = sharing.combine([self.decode_agg_share(a) for a in agg_shares])
        return self.measurement.decode(total, num_measurements)
