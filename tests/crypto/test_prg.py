"""PRG (crypto.prg): the construction against an independent reference,
domain separation, and Field64 sampling by rejection (never by modulo)."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest
from Crypto.Cipher import AES  # pycryptodome: an independent AES-CTR for the reference
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import prg

P = prg.FIELD64_MODULUS
SEED = bytes(range(32))
DST = prg.dst("test")


def reference_key(seed: bytes, dst: bytes, binder: bytes) -> bytes:
    """RFC 5869 HKDF-SHA256 with L = 32 (one Extract, one Expand block), stdlib hmac."""
    prk = hmac.digest(dst, seed, hashlib.sha256)
    return hmac.digest(prk, binder + b"\x01", hashlib.sha256)


def reference_keystream(seed: bytes, dst: bytes, binder: bytes, nbytes: int) -> bytes:
    """AES-256-CTR (pycryptodome) from counter block 0^12 || 00000002."""
    start = bytes(12) + (2).to_bytes(4, "big")
    return AES.new(reference_key(seed, dst, binder), AES.MODE_CTR, nonce=b"", initial_value=start).encrypt(bytes(nbytes))


@pytest.mark.parametrize("nbytes", [0, 1, 16, 100, 4096])
def test_stream_is_the_gcm_keystream_under_nonce_zero(nbytes: int) -> None:
    # the documented equivalence the short-stream path relies on (SP 800-38D GCTR from inc32(J0))
    key = reference_key(SEED, DST, b"g")
    gcm = AES.new(key, AES.MODE_GCM, nonce=bytes(12)).encrypt(bytes(nbytes))
    assert prg.keystream(SEED, DST, b"g", nbytes) == gcm


def test_dst_layout() -> None:
    assert prg.dst("additive-share") == b"twinmpc/v1/prg-aes256ctr/additive-share"
    assert prg.dst("x", "other-alg") == b"twinmpc/v1/other-alg/x"


def test_known_answer() -> None:
    # Pinned output; also in tests/vectors/twinmpc-v1/Prg_0.json
    out = prg.keystream(SEED, DST, b"binder", 48)
    assert out.hex() == reference_keystream(SEED, DST, b"binder", 48).hex()
    assert out.hex() == KAT_HEX


KAT_HEX = (
    "f94aaf6112e64c689e8041c24d6cbde3"
    "be50affdecd9fe34b41c9c3be11715d3"
    "d009c2f769a8164b2dd1ad97640a8cea"
)


@given(
    seed=st.binary(min_size=16, max_size=64),
    dst=st.binary(max_size=40),
    binder=st.binary(max_size=80),
    nbytes=st.integers(min_value=0, max_value=200),
)
@settings(max_examples=60)
def test_matches_reference_construction(seed: bytes, dst: bytes, binder: bytes, nbytes: int) -> None:
    assert prg.keystream(seed, dst, binder, nbytes) == reference_keystream(seed, dst, binder, nbytes)


def test_stream_is_prefix_consistent() -> None:
    long = prg.keystream(SEED, DST, b"b", 1000)
    assert prg.keystream(SEED, DST, b"b", 17) == long[:17]
    assert prg.expand_ring(SEED, DST, b"b", 3).tolist() == prg.expand_ring(SEED, DST, b"b", 100)[:3].tolist()


@pytest.mark.parametrize(
    ("other_seed", "other_dst", "other_binder"),
    [
        (SEED, prg.dst("test2"), b"binder"),  # another usage
        (SEED, prg.dst("test", "prg-chacha20"), b"binder"),  # another algorithm id
        (SEED, DST, b"binder\x00"),  # binder extended by one byte
        (SEED, DST, b"bindes"),  # binder differing in the last byte
        (bytes(32), DST, b"binder"),  # another seed
        (SEED[:16], DST, b"binder"),  # seed prefix
    ],
)
def test_domain_separation(other_seed: bytes, other_dst: bytes, other_binder: bytes) -> None:
    base = prg.keystream(SEED, DST, b"binder", 64)
    other = prg.keystream(other_seed, other_dst, other_binder, 64)
    assert base != other
    # not merely a shifted copy of the same stream
    assert other[:16] not in prg.keystream(SEED, DST, b"binder", 4096)


def test_salt_and_info_are_not_interchangeable() -> None:
    assert prg.keystream(SEED, b"a", b"b", 32) != prg.keystream(SEED, b"b", b"a", 32)


@pytest.mark.parametrize("n", [0, 15])
def test_short_seed_rejected(n: int) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        prg.keystream(bytes(n), DST, b"", 8)


@pytest.mark.parametrize("nbytes", [-1, prg.MAX_STREAM_BYTES + 1])
def test_stream_length_bounds(nbytes: int) -> None:
    with pytest.raises(ValueError, match="PRG output"):
        prg.keystream(SEED, DST, b"", nbytes)


def test_expand_ring_is_the_little_endian_words() -> None:
    stream = prg.keystream(SEED, DST, b"x", 80)
    words = prg.expand_ring(SEED, DST, b"x", 10)
    assert words.dtype == np.dtype("<u8")
    assert words.tolist() == [int.from_bytes(stream[i : i + 8], "little") for i in range(0, 80, 8)]
    words += 1  # a writable copy, not a read-only view of the keystream


def reference_field64(stream_fn, n: int) -> list[int]:
    """Draft VDAF-style rejection: read 8-byte LE words in order, keep those < p."""
    out: list[int] = []
    nbytes = 8 * (n + 64)
    stream = stream_fn(nbytes)
    pos = 0
    while len(out) < n:
        if pos + 8 > len(stream):
            nbytes *= 2
            stream = stream_fn(nbytes)
        w = int.from_bytes(stream[pos : pos + 8], "little")
        pos += 8
        if w < P:
            out.append(w)
    return out


@given(seed=st.binary(min_size=32, max_size=32), n=st.integers(min_value=0, max_value=300))
@settings(max_examples=40)
def test_expand_field64_matches_rejection_reference(seed: bytes, n: int) -> None:
    got = prg.expand_field64(seed, DST, b"f", n)
    assert got.dtype == np.uint64 and got.shape == (n,)
    assert bool(np.all(got < np.uint64(P)))
    assert got.tolist() == reference_field64(lambda nb: prg.keystream(seed, DST, b"f", nb), n)


def _crafted_stream(rejected_prefix: int):
    """A keystream whose first words are all >= p (probability 2^-32 each in a real stream)."""

    def keystream(seed: bytes, dst: bytes, binder: bytes, nbytes: int) -> bytes:
        words = [P + (i % 7) if i < rejected_prefix else i * 1_000_003 for i in range(nbytes // 8)]
        words[1] = (1 << 64) - 1 if rejected_prefix > 1 else words[1]
        return b"".join(w.to_bytes(8, "little") for w in words)

    return keystream


@pytest.mark.parametrize("rejected_prefix", [1, 3, 8, 9, 40])
def test_expand_field64_rejects_words_at_or_above_p(monkeypatch: pytest.MonkeyPatch, rejected_prefix: int) -> None:
    # The randomness source is replaced by a fixed byte string so the rejection
    # branch (and, for > 8 rejections, the re-draw loop) is exercised.
    fake = _crafted_stream(rejected_prefix)
    monkeypatch.setattr(prg, "keystream", fake)
    got = prg.expand_field64(SEED, DST, b"", 5).tolist()
    expected = reference_field64(lambda nb: fake(SEED, DST, b"", nb), 5)
    assert got == expected == [i * 1_000_003 for i in range(rejected_prefix, rejected_prefix + 5)]


@pytest.mark.parametrize("n", [8191, 8192, 8193, 3 * 8192 + 5])
def test_long_expansion_across_chunk_boundaries(n: int) -> None:
    # short streams (<= 64 KiB) come from AES-GCM, long ones from chunked AES-CTR: same bytes
    words = prg.expand_ring(SEED, DST, b"long", n)
    ref = np.frombuffer(reference_keystream(SEED, DST, b"long", 8 * n), dtype="<u8")
    assert words.shape == (n,) and words.dtype == np.dtype("<u8")
    assert np.array_equal(words, ref)
    words[-1] += np.uint64(1)  # writable
