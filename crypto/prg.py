"""Pseudorandom generator: expand a seed into ring elements or bytes.

Construction (domain-separated, no home-made cipher)::

    key    = HKDF-SHA256(ikm=seed, salt=dst, info=binder, L=32)
    stream = AES-256-CTR(key, iv=0^16) applied to zero bytes

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
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto import ring

VERSION = b"twinmpc/v1"
SEED_SIZE = 32
_ZERO_IV = bytes(16)
FIELD64_MODULUS = 2**32 * 4294967295 + 1


def dst(usage: str, algorithm: str = "prg-aes256ctr") -> bytes:
    """Domain-separation tag built from version, algorithm id and usage."""
    return b"/".join((VERSION, algorithm.encode(), usage.encode()))


def keystream(seed: bytes, dst: bytes, binder: bytes, nbytes: int) -> bytes:
    """`nbytes` of pseudorandom bytes expanded from a uniform seed."""
    if len(seed) < 16:
        raise ValueError("PRG seed must be at least 16 bytes")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=dst, info=binder).derive(seed)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()
    return encryptor.update(bytes(nbytes))


def expand_ring(seed: bytes, dst: bytes, binder: bytes, n: int) -> np.ndarray:
    """n uniform elements of Z/2^64."""
    return np.frombuffer(keystream(seed, dst, binder, n * ring.ELEMENT_SIZE), dtype=ring.DTYPE).copy()


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
