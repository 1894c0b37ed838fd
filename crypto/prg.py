"""Pseudorandom generator: expand a seed into ring elements or bytes.

Construction (domain-separated, no home-made cipher)::

    key    = HKDF-SHA256(ikm=seed, salt=dst, info=binder, L=32)
    stream = AES-256-CTR(key, initial counter block = 0^12 || 00000002) over zero bytes

The stream is exactly the keystream AES-256-GCM uses under nonce 0^12
(NIST SP 800-38D, GCTR from inc32(J0)).  Short streams (<= 64 KiB) are
therefore taken from `AESGCM.encrypt_into` of zero bytes with the tag dropped
(about 1 us of set-up against 8 us for `cryptography`'s `Cipher` objects,
which matters for the seed-compressed scalar shares every report carries);
long streams come from AES-CTR written chunk by chunk into the result (no
GHASH, no full-size temporaries).  Both paths give the same bytes, tested
against pycryptodome's AES-CTR.

`dst` names the usage and version (see `dst()`), `binder` ties the stream to
the report and party it is for.  Ring elements are the little-endian uint64
words of the stream, uniform by construction; field elements are drawn by
rejection (`expand_field64`), never reduced modulo p.

Not for: key derivation of long-term keys or anything needing a MAC.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from twinmpc.crypto import ring

VERSION = b"twinmpc/v1"
SEED_SIZE = 32
FIELD64_MODULUS = 2**32 * 4294967295 + 1
MAX_STREAM_BYTES = 16 * (2**32 - 2)  # below this, CTR's 128-bit and GCM's 32-bit counters agree
_SHA256 = hashes.SHA256()
_GCM_NONCE = bytes(12)
_CTR_GCM_START = modes.CTR(bytes(12) + (2).to_bytes(4, "big"))  # immutable; built once
_ZERO_CHUNK = memoryview(bytes(1 << 16))
_TAG = 16
_BLOCK = 16


def dst(usage: str, algorithm: str = "prg-aes256ctr") -> bytes:
    """Domain-separation tag built from version, algorithm id and usage."""
    return b"/".join((VERSION, algorithm.encode(), usage.encode()))


def _stream(seed: bytes, dst: bytes, binder: bytes, nbytes: int) -> np.ndarray:
    """The first `nbytes` of the stream as a writable uint8 array."""
    if len(seed) < 16:
        raise ValueError("PRG seed must be at least 16 bytes")
    if not 0 <= nbytes <= MAX_STREAM_BYTES:
        raise ValueError(f"PRG output must be 0..{MAX_STREAM_BYTES} bytes")
    key = HKDF(algorithm=_SHA256, length=32, salt=dst, info=binder).derive(seed)
    if nbytes <= len(_ZERO_CHUNK):
        buf = np.empty(nbytes + _TAG, dtype=np.uint8)  # keystream || GCM tag (dropped)
        AESGCM(key).encrypt_into(_GCM_NONCE, _ZERO_CHUNK[:nbytes], None, buf)
        return buf[:nbytes]
    encryptor = Cipher(algorithms.AES(key), _CTR_GCM_START).encryptor()
    buf = np.empty(nbytes + _BLOCK - 1, dtype=np.uint8)  # update_into wants block_size - 1 spare bytes
    view = memoryview(buf)
    for offset in range(0, nbytes, len(_ZERO_CHUNK)):
        size = min(len(_ZERO_CHUNK), nbytes - offset)
        encryptor.update_into(_ZERO_CHUNK[:size], view[offset : offset + size + _BLOCK - 1])
    return buf[:nbytes]


def keystream(seed: bytes, dst: bytes, binder: bytes, nbytes: int) -> bytes:
    """`nbytes` of pseudorandom bytes expanded from a uniform seed."""
    return _stream(seed, dst, binder, nbytes).tobytes()


def expand_ring(seed: bytes, dst: bytes, binder: bytes, n: int) -> np.ndarray:
    """n uniform elements of Z/2^64 (the stream's little-endian words), writable."""
    return _stream(seed, dst, binder, n * ring.ELEMENT_SIZE).view(ring.DTYPE)


def expand_field64(seed: bytes, dst: bytes, binder: bytes, n: int) -> np.ndarray:
    """n uniform elements of Field64 by rejection sampling of 64-bit words.

    The rejection rate is 2^-32, so one over-sized draw almost always
    suffices; the loop only continues in the astronomically rare case.
    """
    extra = 8
    while True:
        words = np.frombuffer(keystream(seed, dst, binder, (n + extra) * 8), dtype="<u8")
        accepted = words[words < np.uint64(FIELD64_MODULUS)]
        if accepted.size >= n:
            return accepted[:n].astype(np.uint64)
        extra *= 2
