"""Extendable-output functions of draft-irtf-cfrg-vdaf-18, Section 6.2.

* `XofTurboShake128` (Section 6.2.1): TurboSHAKE128 with domain byte 1 over
  ``len(dst) (2 bytes LE) || dst || len(seed) (1 byte) || seed || binder``.
* `XofFixedKeyAes128` (Section 6.2.2): fixed-key AES-128 in the circular
  correlation-robust hash mode of GKWWY20; the key is TurboSHAKE128 (domain 2)
  of ``len(dst) || dst || binder``.  The draft reserves it for IDPFs; we use
  it only where the draft does.

``next_vec`` samples field elements by rejection exactly as the draft's
``Xof.next_vec``: read ENCODED_SIZE bytes, mask to next_power_of_2(p) - 1
(all ones for both draft fields, so a no-op), keep if < p.  It reads in
batches of exactly the missing count, so it consumes the same stream.  On
fields stored as fixed-width words whose bytes are the encoding (`DTYPE`),
the stream is read straight into the result array (no bytes object, no
decoding copy: a SumVec(100000) share is 12.8 MB).

The binder may be given in parts (a tuple of bytes-like objects): the XOF
absorbs them one after the other, which hashes exactly the concatenation
without building it.  Prio3's joint-randomness parts bind a whole
measurement share (12.8 MB for SumVec(100000)); concatenating it with the
aggregator id and nonce, then with the framing, cost two copies.

TurboSHAKE128 comes from xoflib (Python bindings of the RustCrypto `sha3`
crate): about 8x less per-call overhead than pycryptodome's, which matters
because Prio3 derives several short XOF streams per report (tests cross-check
both libraries byte for byte).  AES comes from `cryptography`.
Must not be used as a password hash, a MAC, or with attacker-chosen seeds
for XofFixedKeyAes128.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Union

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from xoflib import TurboShake128, turbo_shake128

from twinmpc.crypto.field import _PrimeField

try:
    from twinmpc.crypto._field_kernel import ffi as _ffi
    from twinmpc.crypto._field_kernel import lib as _lib
except ImportError:  # not compiled (a source tree used without `pip install`)
    _ffi = _lib = None

BytesLike = Union[bytes, bytearray, memoryview]
# A binder, whole or as parts hashed one after the other (the same as their concatenation).
Binder = Union[BytesLike, tuple[BytesLike, ...]]

# Binders longer than this are absorbed as they are rather than concatenated with the framing.
_CONCAT_MAX = 4096


@lru_cache(maxsize=256)
def _framed_dst(dst: bytes) -> bytes:
    """len(dst) (2 bytes LE) || dst: the same for every report of a task and usage."""
    return len(dst).to_bytes(2, "little") + dst


def _turbo_shake128(domain: int, prefix: bytes, binder: Binder):  # type: ignore[no-untyped-def]
    """xoflib's TurboSHAKE128 reader of prefix || binder (binder whole or in parts)."""
    if isinstance(binder, tuple):
        h = TurboShake128(domain, prefix)
        for part in binder:
            h.absorb(part)
        return h.finalize()
    if len(binder) > _CONCAT_MAX:
        return TurboShake128(domain, prefix).absorb(binder).finalize()
    return turbo_shake128(domain, prefix + binder)


class TurboShake128Native:
    """TurboSHAKE128 of crypto/xof_kernel.c (the same bytes as xoflib's, tested against it and
    RFC 9861): absorb, then read.  Its state can be handed to the compiled share kernels
    (crypto.field_native `expand_share`), which run several such streams on SIMD lanes.

    Only with the compiled kernel (`native_xof_available`)."""

    __slots__ = ("state", "ptr")
    STATE_WORDS = 28  # ts128 in xof_kernel.c: 25 lanes, position, squeezing flag, domain

    def __init__(self, domain: int, data: BytesLike = b"") -> None:
        self.state = np.zeros(self.STATE_WORDS, dtype=np.uint64)
        self.ptr = _ffi.from_buffer(self.state)
        _lib.ts_init(self.ptr, domain)
        if len(data):
            self.absorb(data)

    def absorb(self, data: BytesLike | np.ndarray) -> TurboShake128Native:
        size = memoryview(data).nbytes
        if size:
            _lib.ts_absorb(self.ptr, _ffi.from_buffer(data), size)
        return self

    def read_into(self, out: np.ndarray) -> None:
        if out.nbytes:
            _lib.ts_squeeze(self.ptr, _ffi.from_buffer(out), out.nbytes)

    def read(self, length: int) -> bytes:
        out = np.empty(length, dtype=np.uint8)
        self.read_into(out)
        return out.tobytes()


def native_xof_available() -> bool:
    """Whether the compiled TurboSHAKE128 (and the kernels that use it) is built."""
    return _lib is not None


class Xof:
    """Common interface: Xof(seed, dst, binder).next(n); next_into; derive_seed; expand_into_vec."""

    SEED_SIZE: int

    def next(self, length: int) -> bytes:
        raise NotImplementedError

    def next_into(self, out: np.ndarray) -> None:
        """Fill `out` (a writable contiguous array) with the next out.nbytes bytes of the stream."""
        out.view(np.uint8)[:] = np.frombuffer(self.next(out.nbytes), dtype=np.uint8)

    def next_vec(self, field: type[_PrimeField], length: int) -> np.ndarray:
        """Next `length` field elements by rejection sampling (draft Xof.next_vec)."""
        size = field.ENCODED_SIZE
        if field.MODULUS.bit_length() != 8 * size:
            raise ValueError("next_vec supports fields whose mask next_power_of_2(p)-1 is all ones")
        if field.DTYPE is not None:
            vec = np.empty(length, dtype=field.DTYPE)
            self.next_into(vec)
            if field.all_canonical(vec):
                return vec
            keep = vec[field.decode_unchecked(vec.view(np.uint8))[1]]  # rare: continue as the draft's loop
            return np.concatenate([keep, self.next_vec(field, length - keep.shape[0])])
        out: list[np.ndarray] = []
        have = 0
        while have < length:
            cand, ok = field.decode_unchecked(self.next((length - have) * size))
            keep = cand[ok]
            out.append(keep)
            have += keep.shape[0]
        return np.concatenate(out) if len(out) > 1 else out[0]

    @classmethod
    def derive_seed(cls, seed: bytes, dst: bytes, binder: Binder) -> bytes:
        return cls(seed, dst, binder).next(cls.SEED_SIZE)  # type: ignore[call-arg]

    @classmethod
    def expand_into_vec(
        cls, field: type[_PrimeField], seed: bytes, dst: bytes, binder: Binder, length: int
    ) -> np.ndarray:
        return cls(seed, dst, binder).next_vec(field, length)  # type: ignore[call-arg]


class XofTurboShake128(Xof):
    """Section 6.2.1."""

    SEED_SIZE = 32

    def __init__(self, seed: bytes, dst: bytes, binder: Binder) -> None:
        if len(seed) > 255:
            raise ValueError("seed longer than 255 bytes")
        if len(dst) > 65535:
            raise ValueError("dst longer than 65535 bytes")
        self._h = _turbo_shake128(1, _framed_dst(dst) + bytes((len(seed),)) + seed, binder)

    def next(self, length: int) -> bytes:
        return self._h.read(length)

    def next_into(self, out: np.ndarray) -> None:
        if out.nbytes:
            self._h.read_into(out.view(np.uint8))

    @staticmethod
    def native(seed: bytes, dst: bytes, binder: Binder = b"") -> TurboShake128Native:
        """The compiled instance after framing, seed and binder (more may be absorbed before the
        first read); reading it gives `XofTurboShake128(seed, dst, binder + more)`'s stream."""
        if len(seed) > 255 or len(dst) > 65535:
            raise ValueError("seed longer than 255 bytes or dst longer than 65535 bytes")
        h = TurboShake128Native(1, _framed_dst(dst) + bytes((len(seed),)) + seed)
        for part in binder if isinstance(binder, tuple) else (binder,):
            h.absorb(part)
        return h

    def __repr__(self) -> str:
        return "XofTurboShake128(<redacted>)"


class XofFixedKeyAes128(Xof):
    """Section 6.2.2."""

    SEED_SIZE = 16

    def __init__(self, seed: bytes, dst: bytes, binder: Binder) -> None:
        if len(seed) != self.SEED_SIZE:
            raise ValueError("XofFixedKeyAes128 seed must be 16 bytes")
        if len(dst) > 65535:
            raise ValueError("dst longer than 65535 bytes")
        key = _turbo_shake128(2, _framed_dst(dst), binder).read(16)
        self._enc = Cipher(algorithms.AES128(key), modes.ECB()).encryptor()
        self._seed = np.frombuffer(seed, dtype="<u8")  # (lo, hi) 64-bit halves
        self._consumed = 0

    def next(self, length: int) -> bytes:
        offset = self._consumed % 16
        first = self._consumed // 16
        last = (self._consumed + length) // 16  # inclusive, as in the draft
        self._consumed += length
        idx = np.arange(first, last + 1, dtype=np.uint64)
        blocks = np.empty((idx.shape[0], 2), dtype="<u8")
        blocks[:, 0] = self._seed[0] ^ idx  # seed XOR to_le_bytes(i, 16); i < 2^64
        blocks[:, 1] = self._seed[1]
        # sigma(lo || hi) = hi || (hi XOR lo)
        sigma = np.empty_like(blocks)
        sigma[:, 0] = blocks[:, 1]
        sigma[:, 1] = blocks[:, 1] ^ blocks[:, 0]
        sig_bytes = sigma.tobytes()
        enc = np.frombuffer(self._enc.update(sig_bytes), dtype="<u8").reshape(-1, 2)
        hashed = (enc ^ sigma).tobytes()
        return hashed[offset : offset + length]

    def __repr__(self) -> str:
        return "XofFixedKeyAes128(<redacted>)"


__all__ = ["Binder", "TurboShake128Native", "Xof", "XofFixedKeyAes128", "XofTurboShake128", "native_xof_available"]
