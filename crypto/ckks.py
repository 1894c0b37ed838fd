"""CKKS approximate homomorphic encryption of real vectors (TenSEAL / Microsoft SEAL), sharp layer.

Only addition is used (aggregators sum ciphertexts), so the default parameters
are a depth-0 profile: poly modulus degree N = 8192 (4096 slots), coefficient
modulus primes [60, 40, 60] bits (data level 100 bits, the last prime is the
special key-switching prime) and scale 2^40.  Total 160 bits is within the
HomomorphicEncryption.org 128-bit bound for N = 8192 (218 bits).  Measured
against the [60, 40, 40, 60] profile that supports one multiplication, it gives
the same precision with 29 % smaller ciphertexts and ~1.6x faster encryption
(numbers and command in docs/homomorphic.md).

Precision: a fresh ciphertext decrypts with absolute error well below 2^-20 per
slot (CKKS, Cheon et al. 2017, Lemma 1: fresh noise <= 8*sqrt(2)*sigma*N + ...
~ 2^18.2 for sigma = 3.2, divided by the scale 2^40), and errors of a sum add, so
``|dec(sum of M ciphertexts) - sum| <= M * SUM_ERROR_PER_SUMMAND`` per slot as
long as |sum| < 2^(100 - 40 - 1) = 2^59.  This is a high-probability bound, not a
worst case; tests check it, docs/homomorphic.md gives measured errors.

Vectors longer than N/2 are split into ceil(len / (N/2)) ciphertexts ("chunks").

Wire formats::

    public context:  version (1) || key id (8) || params len (2) || params JSON || SEAL context
    ciphertext:      version (1) || key id (8) || length (4) || chunks (2) || { len (4) || CKKSVector }*

The key id is SHA-256(DST || params JSON || SEAL public context)[:8].  The public
context carries the public key only: no secret key, no relinearisation or Galois
keys (is_private() is False after load, checked).

Not for: exact integer sums (use `crypto.paillier`), anything where the CKKS
decryption error leaking low-order noise bits matters (Li-Micciancio 2021
IND-CPA-D: never hand raw decryptions of chosen ciphertexts back to others).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts

from twinmpc.crypto import key_storage
from twinmpc.crypto.errors import DecodeError, WrongKey

VERSION = 1
KEY_ID_SIZE = 8
DST_KEY_ID = b"twinmpc/v1/ckks/key-id"
KEY_FILE_KIND = "ckks-secret-context"
# Per-summand decryption error bound (see module docstring).
SUM_ERROR_PER_SUMMAND = 2.0**-20
# HomomorphicEncryption.org security standard, 128-bit classical, ternary secret.
_MAX_COEFF_BITS = {8192: 218, 16384: 438, 32768: 881}
_HEADER = struct.Struct(">B8sIH")


@dataclass(frozen=True)
class CkksParams:
    """Encryption parameters; validated against the 128-bit security table."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    global_scale_bits: int = 40

    def __post_init__(self) -> None:
        if self.poly_modulus_degree not in _MAX_COEFF_BITS:
            raise ValueError(f"poly_modulus_degree must be one of {sorted(_MAX_COEFF_BITS)}")
        sizes = self.coeff_mod_bit_sizes
        if not isinstance(sizes, tuple) or len(sizes) < 2 or not all(isinstance(b, int) and 20 <= b <= 60 for b in sizes):
            raise ValueError("coeff_mod_bit_sizes must be a tuple of >= 2 prime sizes in [20, 60]")
        if sum(sizes) > _MAX_COEFF_BITS[self.poly_modulus_degree]:
            raise ValueError("coefficient modulus too large for 128-bit security at this degree")
        if not 20 <= self.global_scale_bits < sizes[0]:
            raise ValueError("global scale must be 2^20 .. below the first prime")

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def data_levels(self) -> int:
        """Primes in a fresh ciphertext (all but the special prime)."""
        return len(self.coeff_mod_bit_sizes) - 1

    @property
    def max_abs_sum(self) -> float:
        """Largest |slot value| (of a sum) that decrypts without wrap-around."""
        return 2.0 ** (sum(self.coeff_mod_bit_sizes[:-1]) - self.global_scale_bits - 1)

    @property
    def max_chunk_bytes(self) -> int:
        """Upper bound on one serialised ciphertext: raw size (2 polys) plus framing slack."""
        return 2 * self.poly_modulus_degree * self.data_levels * 8 + 4096

    def chunks_for(self, length: int) -> int:
        return max(1, math.ceil(length / self.slots))

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
                "global_scale_bits": self.global_scale_bits,
                "poly_modulus_degree": self.poly_modulus_degree,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CkksParams:
        doc = json.loads(data)
        if not isinstance(doc, dict) or set(doc) != {"coeff_mod_bit_sizes", "global_scale_bits", "poly_modulus_degree"}:
            raise ValueError("CKKS params: unexpected fields")
        return cls(doc["poly_modulus_degree"], tuple(doc["coeff_mod_bit_sizes"]), doc["global_scale_bits"])


DEFAULT_PARAMS = CkksParams()


def _key_id(params_json: bytes, context_bytes: bytes) -> bytes:
    return hashlib.sha256(DST_KEY_ID + struct.pack(">H", len(params_json)) + params_json + context_bytes).digest()[
        :KEY_ID_SIZE
    ]


class CkksPublicContext:
    """What aggregators and edge nodes hold: encrypt and add, never decrypt."""

    __slots__ = ("params", "key_id_bytes", "_ctx", "_bundle", "_parms_id")

    def __init__(self, params: CkksParams, ctx: Any, bundle: bytes, key_id_bytes: bytes) -> None:
        if ctx.is_private() or ctx.has_secret_key():
            raise ValueError("a public CKKS context must not hold the secret key")
        self.params = params
        self.key_id_bytes = key_id_bytes
        self._ctx = ctx
        self._bundle = bundle
        probe = ts.ckks_vector(ctx, [0.0]).ciphertext()[0]
        if probe.poly_modulus_degree() != params.poly_modulus_degree or probe.coeff_modulus_size() != params.data_levels:
            raise DecodeError("CKKS context does not match its stated parameters")
        self._parms_id = list(probe.parms_id())

    def __repr__(self) -> str:
        return f"CkksPublicContext(key_id={self.key_id}, params={self.params})"

    @property
    def key_id(self) -> str:
        return self.key_id_bytes.hex()

    def to_bytes(self) -> bytes:
        return self._bundle

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksPublicContext:
        """Load a public context received from the collector; rejects secret material."""
        if len(data) < 11 or data[0] != VERSION:
            raise DecodeError("CKKS public context: short or unknown version")
        key_id = data[1:9]
        (plen,) = struct.unpack(">H", data[9:11])
        params_json, ctx_bytes = data[11 : 11 + plen], data[11 + plen :]
        if len(params_json) != plen or not ctx_bytes:
            raise DecodeError("CKKS public context: truncated")
        if _key_id(params_json, ctx_bytes) != key_id:
            raise DecodeError("CKKS public context: key id does not match its content")
        try:
            params = CkksParams.from_json(params_json)
            ctx = ts.context_from(ctx_bytes)
        except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on bad protobuf
            raise DecodeError(f"CKKS public context does not parse: {exc}") from exc
        if ctx.is_private():
            raise DecodeError("CKKS public context carries a secret key")
        ctx.global_scale = 2.0**params.global_scale_bits
        return cls(params, ctx, bytes(data), key_id)

    def encrypt(self, values: np.ndarray) -> list[Any]:
        """Encrypt a 1-D float vector into ceil(len / slots) CKKSVector chunks."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError("CKKS plaintext must be a non-empty 1-D vector")
        if not np.all(np.isfinite(arr)):
            raise ValueError("CKKS plaintext must be finite")
        s = self.params.slots
        return [ts.ckks_vector(self._ctx, arr[i : i + s].tolist()) for i in range(0, arr.size, s)]

    def _check_chunk(self, vec: Any, expected_size: int) -> None:
        if vec.size() != expected_size:
            raise DecodeError(f"CKKS chunk has {vec.size()} slots in use, expected {expected_size}")
        cts = vec.ciphertext()
        if len(cts) != 1:
            raise DecodeError("CKKS chunk must be a single SEAL ciphertext")
        c = cts[0]
        if (
            c.size() != 2
            or not c.is_ntt_form()
            or c.poly_modulus_degree() != self.params.poly_modulus_degree
            or list(c.parms_id()) != self._parms_id
            or c.scale != 2.0**self.params.global_scale_bits
        ):
            raise DecodeError("CKKS chunk has the wrong size, level or scale")


def encode_ciphertext(pub: CkksPublicContext, chunks: Sequence[Any], length: int) -> bytes:
    """Wire encoding of a chunked CKKS vector of ``length`` slots (module docstring)."""
    parts = [_HEADER.pack(VERSION, pub.key_id_bytes, length, len(chunks))]
    for vec in chunks:
        blob = vec.serialize()
        parts.append(struct.pack(">I", len(blob)))
        parts.append(blob)
    return b"".join(parts)


def peek_key_id(data: bytes) -> str:
    """Key id of an encoded ciphertext, for routing before full validation."""
    if len(data) < _HEADER.size or data[0] != VERSION:
        raise DecodeError("CKKS ciphertext: short header or unknown version")
    return data[1 : 1 + KEY_ID_SIZE].hex()


def decode_ciphertext(pub: CkksPublicContext, data: bytes, length: int) -> list[Any]:
    """Deserialise under the public context and validate every chunk.

    Checks: version, key id (`WrongKey` if another key), stated length,
    chunk count, per-chunk byte bound, clean SEAL load, slot count, ciphertext
    size 2, level (parms id), scale.  No trailing bytes.
    """
    if peek_key_id(data) != pub.key_id:
        raise WrongKey("CKKS ciphertext under another key id")
    _, _, stated, nchunks = _HEADER.unpack_from(data)
    if stated != length:
        raise DecodeError(f"CKKS ciphertext has length {stated}, expected {length}")
    if nchunks != pub.params.chunks_for(length):
        raise DecodeError(f"CKKS ciphertext has {nchunks} chunks, expected {pub.params.chunks_for(length)}")
    if len(data) > _HEADER.size + nchunks * (4 + pub.params.max_chunk_bytes):
        raise DecodeError("CKKS ciphertext larger than the parameters allow")
    off = _HEADER.size
    out = []
    s = pub.params.slots
    for i in range(nchunks):
        if off + 4 > len(data):
            raise DecodeError("CKKS ciphertext truncated")
        (blen,) = struct.unpack_from(">I", data, off)
        off += 4
        if blen > pub.params.max_chunk_bytes or off + blen > len(data):
            raise DecodeError("CKKS chunk length out of bounds")
        try:
            vec = ts.ckks_vector_from(pub._ctx, data[off : off + blen])
        except Exception as exc:  # SEAL/protobuf load failure: malformed input
            raise DecodeError(f"CKKS chunk does not deserialise: {type(exc).__name__}") from exc
        off += blen
        pub._check_chunk(vec, min(s, length - i * s))
        out.append(vec)
    if off != len(data):
        raise DecodeError("CKKS ciphertext has trailing bytes")
    return out


def add(acc: Sequence[Any], other: Sequence[Any]) -> list[Any]:
    """Chunk-wise homomorphic sum (new objects; inputs unchanged)."""
    if len(acc) != len(other):
        raise ValueError("CKKS ciphertexts differ in chunk count")
    return [a + b for a, b in zip(acc, other)]


class CkksSecretContext:
    """The collector's context with the secret key; redacted repr, sealed at rest."""

    __slots__ = ("public", "_ctx")

    def __init__(self, public: CkksPublicContext, ctx: Any) -> None:
        if not ctx.is_private():
            raise ValueError("secret context lacks the secret key")
        self.public = public
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"CkksSecretContext(key_id={self.key_id}, <redacted>)"

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @property
    def params(self) -> CkksParams:
        return self.public.params

    def decrypt(self, chunks: Sequence[Any]) -> np.ndarray:
        """Concatenate the decryptions of all chunks (float64)."""
        return np.concatenate(
            [np.asarray(ts.ckks_vector_from(self._ctx, v.serialize()).decrypt(), dtype=np.float64) for v in chunks]
        )

    def seal(self, passphrase: bytes, *, log2_n: int = key_storage.DEFAULT_LOG2_N) -> bytes:
        """Key file body: public bundle + SEAL context with secret key, passphrase-sealed."""
        secret_bytes = self._ctx.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
        bundle = self.public.to_bytes()
        plain = struct.pack(">I", len(bundle)) + bundle + secret_bytes
        return key_storage.seal_secret(plain, passphrase, kind=KEY_FILE_KIND, key_id=self.key_id, log2_n=log2_n)

    @classmethod
    def unseal(cls, sealed: bytes, passphrase: bytes) -> CkksSecretContext:
        key_id, plain = key_storage.open_secret(sealed, passphrase, kind=KEY_FILE_KIND)
        (blen,) = struct.unpack_from(">I", plain)
        public = CkksPublicContext.from_bytes(plain[4 : 4 + blen])
        if public.key_id != key_id:
            raise key_storage.KeyFileError("key file: key id does not match the context")
        ctx = ts.context_from(plain[4 + blen :])
        ctx.global_scale = 2.0**public.params.global_scale_bits
        return cls(public, ctx)

    def save(self, path: str | os.PathLike[str], passphrase: bytes, *, log2_n: int = key_storage.DEFAULT_LOG2_N) -> None:
        key_storage.write_private_file(path, self.seal(passphrase, log2_n=log2_n))

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: bytes) -> CkksSecretContext:
        return cls.unseal(key_storage.read_private_file(path), passphrase)


def generate_context(params: CkksParams = DEFAULT_PARAMS) -> CkksSecretContext:
    """Fresh key material (SEAL samples from the OS CSPRNG-seeded PRNG)."""
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    ctx.global_scale = 2.0**params.global_scale_bits
    ctx_bytes = ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)
    params_json = params.to_json()
    key_id = _key_id(params_json, ctx_bytes)
    bundle = bytes([VERSION]) + key_id + struct.pack(">H", len(params_json)) + params_json + ctx_bytes
    return CkksSecretContext(CkksPublicContext.from_bytes(bundle), ctx)
