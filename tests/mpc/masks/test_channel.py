"""Known answers for mask expansion and the pairwise-key helpers."""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from twinmpc.mpc.masks import channel
from twinmpc.mpc.masks.errors import ForgedMessage, UntrustedPeer
from twinmpc.mpc.masks.session import Session

SESSION = Session(bytes(range(32)), 1_700_000_000, 7)
SEED = bytes(range(32, 64))


def _reference_mask(seed: bytes, usage: bytes, binder: bytes, n: int) -> list[int]:
    """The documented construction, written out: HKDF-SHA256 then AES-256-CTR from counter block 0^12 || 2."""
    session_digest = hashlib.sha256(b"twinmpc/v1/masks/session\x00" + SESSION.encode()).digest()
    key = HKDF(hashes.SHA256(), 32, salt=b"twinmpc/v1/prg-aes256ctr/" + usage, info=session_digest + binder).derive(seed)
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(12) + (2).to_bytes(4, "big"))).encryptor()
    return np.frombuffer(enc.update(bytes(8 * n)), dtype="<u8").tolist()


def test_pairwise_mask_known_answer() -> None:
    got = channel.pairwise_mask(SEED, SESSION, 3, 9, 4).tolist()
    assert got == [17286150915007868875, 4436351208026406811, 14231454117782886819, 8425936795865212641]
    assert got == _reference_mask(SEED, b"masks/pairwise-mask", struct.pack(">II", 3, 9), 4)


def test_self_mask_known_answer() -> None:
    got = channel.self_mask(bytes(32), SESSION, 5, 3).tolist()
    assert got == [12333175702815950884, 16332924101449131777, 16077753687697899225]
    assert got == _reference_mask(bytes(32), b"masks/self-mask", struct.pack(">I", 5), 3)


def test_masks_depend_on_pair_order_session_and_full_seed() -> None:
    base = channel.pairwise_mask(SEED, SESSION, 3, 9, 8)
    assert not np.array_equal(base, channel.pairwise_mask(SEED, SESSION, 9, 3, 8))
    assert not np.array_equal(base, channel.pairwise_mask(SEED, Session(SESSION.task_id, SESSION.window_start, 8), 3, 9, 8))
    flipped = SEED[:31] + bytes([SEED[31] ^ 1])  # the last bit of the seed matters: nothing is folded
    assert not np.array_equal(base, channel.pairwise_mask(flipped, SESSION, 3, 9, 8))


@given(st.binary(min_size=32, max_size=32))
def test_secret_field_round_trip(secret: bytes) -> None:
    assert channel.field_to_secret(channel.secret_to_field(secret)) == secret


def test_non_canonical_secret_is_refused() -> None:
    values = channel.secret_to_field(bytes(32))
    values[4] = np.uint64(1 << 40)  # the last chunk holds 4 bytes
    with pytest.raises(ForgedMessage, match="not canonical"):
        channel.field_to_secret(values)


def test_sealed_share_is_bound_to_round_sender_and_receiver() -> None:
    secret = os.urandom(32)
    sealed = channel.seal_share(secret, SESSION, 1, 4, 5, b"share", os.urandom(12))
    assert channel.open_share(secret, SESSION, 1, 4, 5, sealed) == b"share"
    for args in ((2, 4, 5), (1, 5, 4), (1, 4, 6)):
        with pytest.raises(ForgedMessage):
            channel.open_share(secret, SESSION, *args, sealed)
    with pytest.raises(ForgedMessage):
        channel.open_share(secret, Session(SESSION.task_id, SESSION.window_start + 60, 7), 1, 4, 5, sealed)


def test_low_order_peer_key_is_refused() -> None:
    with pytest.raises(UntrustedPeer, match="low-order"):
        channel.exchange(X25519PrivateKey.generate(), bytes(32))
