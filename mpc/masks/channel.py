"""Pairwise keys between clients: share sealing, consistency tags and masks.

Every client holds a long-term X25519 *channel* key, enrolled with its
identity (the directory resolves a peer's credential to its channel public
key), and a fresh X25519 *mask* key per round.  From the raw X25519 outputs:

* share sealing: ``key = HKDF-SHA256(ikm=X25519(c_i, C_j), salt=DST_SHARES,
  info=session digest || sender || receiver)``, ChaCha20-Poly1305 with a random
  96-bit nonce and associated data binding (version, task, window, attempt,
  round, sender, receiver);
* consistency tags: HMAC-SHA256 under ``HKDF(..., salt=DST_CONFIRM, ...)`` over
  the digest of the survivor set: a client convinces each neighbour that it saw
  the same set (the Bonawitz et al. 2017 ConsistencyCheck round, with pairwise
  MACs in place of signatures: only the neighbours need convincing);
* masks: the X25519 output of two *mask* keys is the full 256-bit seed of the
  pairwise mask; a 256-bit OS-random seed gives the self mask.  Both are
  expanded by `crypto.prg` (HKDF then AES-256-CTR) into Z/2^64, bound to the
  session and the pair.  Never folded, never a numpy generator.

Separate channel and mask keys matter: the server reconstructs a dropped
client's *mask* key, which must not open the shares other clients sealed to it.

Not for: anything outside one round of the masks protocol.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from twinmpc.crypto import prg
from twinmpc.crypto.field import Field64
from twinmpc.mpc.masks.errors import ForgedMessage, UntrustedPeer
from twinmpc.mpc.masks.session import Session

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MAC_SIZE = 32
DST_SHARES = b"twinmpc/v1/masks/hkdf-sha256/share-sealing"
DST_CONFIRM = b"twinmpc/v1/masks/hkdf-sha256/consistency-mac"
PAIRWISE_DST = prg.dst("masks/pairwise-mask")
SELF_DST = prg.dst("masks/self-mask")
_AD_LABEL = b"twinmpc/v1/masks/share\x00"
_SHA256 = hashes.SHA256()
_ZERO = bytes(32)

# A 32-byte secret as 5 Field64 elements: four 7-byte chunks and one 4-byte chunk,
# each below 2^56 < p, so the map is injective and its inverse checks canonicity.
SECRET_ELEMENTS = 5
_CHUNKS = ((0, 7), (7, 14), (14, 21), (21, 28), (28, 32))


def exchange(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 agreement; a low-order peer key (all-zero output) is refused."""
    try:
        out = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # cryptography refuses the all-zero shared secret
        raise UntrustedPeer("peer public key is a low-order point") from exc
    if hmac.compare_digest(out, _ZERO):
        raise UntrustedPeer("peer public key is a low-order point")
    return out


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def _subkey(secret: bytes, salt: bytes, session: Session, sender: int, receiver: int) -> bytes:
    info = session.digest + struct.pack(">II", sender, receiver)
    return HKDF(algorithm=_SHA256, length=KEY_SIZE, salt=salt, info=info).derive(secret)


def share_ad(session: Session, round_no: int, sender: int, receiver: int) -> bytes:
    """Associated data of a sealed share: version, task, window, attempt, round, sender, receiver."""
    return _AD_LABEL + session.encode() + struct.pack(">BII", round_no, sender, receiver)


def seal_share(secret: bytes, session: Session, round_no: int, sender: int, receiver: int, plaintext: bytes, nonce: bytes) -> bytes:
    """nonce || ChaCha20-Poly1305(plaintext) under the pair's sealing key for (sender -> receiver)."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError("nonce must be 12 bytes")
    key = _subkey(secret, DST_SHARES, session, sender, receiver)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, share_ad(session, round_no, sender, receiver))


def open_share(secret: bytes, session: Session, round_no: int, sender: int, receiver: int, sealed: bytes) -> bytes:
    key = _subkey(secret, DST_SHARES, session, sender, receiver)
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], share_ad(session, round_no, sender, receiver))
    except (InvalidTag, ValueError) as exc:
        raise ForgedMessage(f"share from client {sender} does not open under the pair key and binding") from exc


def confirm_tag(secret: bytes, session: Session, sender: int, receiver: int, survivors_digest: bytes) -> bytes:
    """MAC by which `sender` tells `receiver` which survivor set it saw."""
    key = _subkey(secret, DST_CONFIRM, session, sender, receiver)
    return hmac.new(key, b"twinmpc/v1/masks/confirm\x00" + survivors_digest, hashlib.sha256).digest()


def pairwise_mask(mask_secret: bytes, session: Session, low: int, high: int, length: int) -> np.ndarray:
    """The mask shared by clients low < high: low adds it, high subtracts it."""
    return prg.expand_ring(mask_secret, PAIRWISE_DST, session.digest + struct.pack(">II", low, high), length)


def self_mask(seed: bytes, session: Session, index: int, length: int) -> np.ndarray:
    return prg.expand_ring(seed, SELF_DST, session.digest + struct.pack(">I", index), length)


def secret_to_field(secret: bytes) -> np.ndarray:
    if len(secret) != 32:
        raise ValueError("secrets are 32 bytes")
    return Field64.from_ints([int.from_bytes(secret[a:b], "little") for a, b in _CHUNKS])


def field_to_secret(values: np.ndarray) -> bytes:
    """Inverse of `secret_to_field`; a value outside its chunk's range means inconsistent shares."""
    ints = Field64.to_ints(values)
    if len(ints) != SECRET_ELEMENTS:
        raise ValueError("a secret is 5 Field64 elements")
    out = bytearray()
    for v, (a, b) in zip(ints, _CHUNKS, strict=True):
        if v >> (8 * (b - a)):
            raise ForgedMessage("reconstructed secret is not canonical: the shares are inconsistent")
        out += v.to_bytes(b - a, "little")
    return bytes(out)


__all__ = [
    "MAC_SIZE",
    "NONCE_SIZE",
    "SECRET_ELEMENTS",
    "TAG_SIZE",
    "confirm_tag",
    "exchange",
    "field_to_secret",
    "open_share",
    "pairwise_mask",
    "public_bytes",
    "seal_share",
    "secret_to_field",
    "self_mask",
]
