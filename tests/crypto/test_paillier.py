"""crypto.paillier: key ids, encryption KATs (cross-checked with phe), signed sums, wire decoding."""

from __future__ import annotations

import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier as phe_paillier

from twinmpc.crypto import key_storage, paillier
from twinmpc.crypto.errors import DecodeError, WrongKey

TEST_BITS = 512
# Fixed 511-bit modulus for known-answer tests (p, q = next primes after 2^255 + 12345 / + 99991).
KAT_P = 57896044618658097711785492504343953926634992332820282019728792003956564832381
KAT_Q = 57896044618658097711785492504343953926634992332820282019728792003956564920041
KAT_KEY_ID = "45ed1b6da567ad23"


@pytest.fixture(scope="module")
def keys() -> tuple[paillier.PaillierPublicKey, paillier.PaillierSecretKey]:
    return paillier.generate_keypair(insecure_test_bits=TEST_BITS)


@pytest.fixture(scope="module")
def kat_keys() -> tuple[paillier.PaillierPublicKey, paillier.PaillierSecretKey]:
    pk = paillier.PaillierPublicKey(KAT_P * KAT_Q, insecure_test_bits=511)
    return pk, paillier.PaillierSecretKey(pk, KAT_P, KAT_Q)


def fixed_rand(value: int):
    """A rand seam that yields ``value`` (already < n, so the reduction keeps it)."""

    def rand(n: int) -> bytes:
        return value.to_bytes(n, "big")

    return rand


# --- keys -------------------------------------------------------------------------


def test_default_keygen_is_2048_bits() -> None:
    pk, sk = paillier.generate_keypair()
    assert pk.bits == 2048
    assert pk.ciphertext_size == 512
    assert paillier.decrypt(sk, paillier.encrypt(pk, -7)) == -7


def test_small_keys_need_the_explicit_test_flag() -> None:
    with pytest.raises(ValueError, match=">= 2048"):
        paillier.generate_keypair(1024)
    with pytest.raises(ValueError, match="insecure_test_bits"):
        paillier.generate_keypair(insecure_test_bits=128)
    with pytest.raises(ValueError, match=">= 2048"):
        paillier.PaillierPublicKey(KAT_P * KAT_Q)


def test_public_key_rejects_even_modulus() -> None:
    with pytest.raises(ValueError, match="odd"):
        paillier.PaillierPublicKey(KAT_P * KAT_Q + 1, insecure_test_bits=511)
    with pytest.raises(TypeError):
        paillier.PaillierPublicKey(True)  # type: ignore[arg-type]


def test_key_id_known_answer(kat_keys) -> None:
    pk, _ = kat_keys
    assert pk.key_id == KAT_KEY_ID
    assert len(pk.key_id_bytes) == 8


def test_public_key_json_round_trip(keys) -> None:
    pk, _ = keys
    doc = json.loads(pk.to_json())
    assert doc == {"alg": "paillier", "key_id": pk.key_id, "n": format(pk.n, "x")}
    assert paillier.PaillierPublicKey.from_json(pk.to_json(), insecure_test_bits=TEST_BITS) == pk


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(key_id="00" * 8), "key id"),
        (lambda d: d.update(extra=1), "unexpected"),
        (lambda d: d.update(alg="rsa"), "unexpected"),
        (lambda d: d.update(n="zz"), "public key"),
    ],
)
def test_public_key_json_rejections(keys, mutate, match) -> None:
    pk, _ = keys
    doc = json.loads(pk.to_json())
    mutate(doc)
    with pytest.raises(DecodeError, match=match):
        paillier.PaillierPublicKey.from_json(json.dumps(doc), insecure_test_bits=TEST_BITS)


def test_public_key_json_small_modulus_rejected_without_flag(keys) -> None:
    pk, _ = keys
    with pytest.raises(DecodeError, match=">= 2048"):
        paillier.PaillierPublicKey.from_json(pk.to_json())


def test_secret_key_repr_is_redacted(kat_keys) -> None:
    _, sk = kat_keys
    text = repr(sk)
    assert "redacted" in text and str(KAT_P) not in text and format(KAT_P, "x") not in text


def test_secret_key_rejects_wrong_factors(kat_keys) -> None:
    pk, _ = kat_keys
    with pytest.raises(ValueError, match="factor"):
        paillier.PaillierSecretKey(pk, KAT_P, KAT_P)


# --- encryption -------------------------------------------------------------------


def test_encryption_known_answer_matches_formula_and_phe(kat_keys) -> None:
    pk, _ = kat_keys
    n, n2, r, m = pk.n, pk.n**2, 123456789, 42
    expected = (1 + m * n) * pow(r, n, n2) % n2
    assert paillier.encrypt(pk, m, rand=fixed_rand(r)) == expected
    assert phe_paillier.PaillierPublicKey(n).raw_encrypt(m, r_value=r) == expected


def test_negative_plaintext_is_stored_mod_n(kat_keys) -> None:
    pk, sk = kat_keys
    c = paillier.encrypt(pk, -5, rand=fixed_rand(99))
    assert sk.raw_decrypt(c) == pk.n - 5
    assert paillier.decrypt(sk, c) == -5


def test_signed_range_boundaries(kat_keys) -> None:
    pk, sk = kat_keys
    top = pk.max_abs_plaintext
    assert paillier.decrypt(sk, paillier.encrypt(pk, top)) == top
    assert paillier.decrypt(sk, paillier.encrypt(pk, -top)) == -top
    with pytest.raises(ValueError, match="range"):
        paillier.encrypt(pk, top + 1)


@pytest.mark.parametrize("bad", [1.5, True, "3", None])
def test_encrypt_rejects_non_integers(kat_keys, bad) -> None:
    pk, _ = kat_keys
    with pytest.raises(TypeError):
        paillier.encrypt(pk, bad)  # type: ignore[arg-type]


def test_zero_randomness_is_redrawn(kat_keys) -> None:
    pk, sk = kat_keys
    draws = iter([bytes(40), (7).to_bytes(40, "big")])
    c = paillier.encrypt(pk, 3, rand=lambda n: next(draws))
    assert c == paillier.encrypt(pk, 3, rand=fixed_rand(7))
    assert paillier.decrypt(sk, c) == 3


def test_encryption_is_randomised(keys) -> None:
    pk, _ = keys
    assert paillier.encrypt(pk, 1) != paillier.encrypt(pk, 1)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.integers(min_value=-(2**62), max_value=2**62), min_size=1, max_size=12))
def test_homomorphic_sum_is_exact(keys, values) -> None:
    pk, sk = keys
    cts = [paillier.encrypt(pk, v) for v in values]
    assert paillier.decrypt(sk, paillier.add(pk, cts)) == sum(values)


def test_add_matches_phe_encrypted_number_addition(keys) -> None:
    pk, _ = keys
    cts = [paillier.encrypt(pk, v) for v in (3, -4, 10)]
    ppk = phe_paillier.PaillierPublicKey(pk.n)
    phe_sum = sum((phe_paillier.EncryptedNumber(ppk, c) for c in cts[1:]), phe_paillier.EncryptedNumber(ppk, cts[0]))
    assert paillier.add(pk, cts) == phe_sum.ciphertext(be_secure=False)


def test_add_vectors(keys) -> None:
    pk, sk = keys
    vecs = [paillier.encrypt_vector(pk, v) for v in ([1, 2, 3], [-1, 5, 0], [10, -20, 30])]
    assert [paillier.decrypt(sk, c) for c in paillier.add_vectors(pk, vecs)] == [10, -13, 33]
    with pytest.raises(ValueError, match="length"):
        paillier.add_vectors(pk, [vecs[0], vecs[1][:2]])
    with pytest.raises(ValueError, match="no vectors"):
        paillier.add_vectors(pk, [])


# --- packing ----------------------------------------------------------------------


def test_pack_known_answer() -> None:
    assert paillier.slot_bits(5) == 5  # bitlen(5) = 3, plus sign and noise headroom
    assert paillier.pack([1, -1, 2], 4, 3) == [1 - 16 + 2 * 256]
    assert paillier.pack([1, -1, 2, 7], 4, 3) == [497, 7]
    assert paillier.unpack([497, 7], 4, 3, 4) == [1, -1, 2, 7]


def test_slots_per_ciphertext(kat_keys) -> None:
    pk, _ = kat_keys
    assert paillier.slots_per_ciphertext(pk, 10) == 50  # floor((511 - 2) / 10)


@settings(max_examples=50, deadline=None)
@given(
    width=st.integers(min_value=3, max_value=70),
    rows=st.lists(st.lists(st.integers(), min_size=7, max_size=7), min_size=1, max_size=4),
)
def test_packed_sums_unpack_to_slot_sums(width, rows) -> None:
    """pack is additive: sum of packings unpacks to column sums while |column sum| < 2^(w-1)."""
    bound = (1 << (width - 1)) // 4 - 1  # 4 rows of values below this never overflow a slot
    rows = [[v % (2 * bound + 1) - bound for v in row] for row in rows]
    packed = [paillier.pack(row, width, 3) for row in rows]
    summed = [sum(col) for col in zip(*packed)]
    assert paillier.unpack(summed, width, 3, 7) == [sum(col) for col in zip(*rows)]


def test_packed_homomorphic_sum(keys) -> None:
    pk, sk = keys
    width, k = 20, paillier.slots_per_ciphertext(pk, 20)
    rows = [[(-1) ** i * 1000 * i for i in range(k + 2)], list(range(k + 2))]
    cts = [paillier.encrypt_vector(pk, paillier.pack(r, width, k)) for r in rows]
    total = [paillier.decrypt(sk, c) for c in paillier.add_vectors(pk, cts)]
    assert paillier.unpack(total, width, k, k + 2) == [a + b for a, b in zip(*rows)]


def test_pack_and_unpack_rejections() -> None:
    with pytest.raises(ValueError, match="signed slot"):
        paillier.pack([8], 4, 1)
    with pytest.raises(ValueError, match="slot width"):
        paillier.pack([0], 1, 1)
    with pytest.raises(DecodeError, match="overflows"):
        paillier.unpack([1 << 20], 4, 3, 3)
    with pytest.raises(ValueError, match="count"):
        paillier.unpack([1, 2], 4, 3, 3)
    with pytest.raises(ValueError, match="non-negative"):
        paillier.slot_bits(-1)


# --- wire encoding ----------------------------------------------------------------


def test_encoding_layout_annotated(kat_keys) -> None:
    pk, _ = kat_keys
    c1 = paillier.encrypt(pk, 1, rand=fixed_rand(2))
    c2 = paillier.encrypt(pk, 2, rand=fixed_rand(3))
    data = paillier.encode_ciphertexts(pk, [c1, c2])
    size = pk.ciphertext_size
    assert size == 128  # 2 * ceil(511 / 8)
    assert data[:1].hex() == "01"  # version
    assert data[1:9].hex() == KAT_KEY_ID  # key id
    assert data[9:13].hex() == "00000002"  # d = 2
    assert data[13 : 13 + size] == c1.to_bytes(size, "big")
    assert len(data) == 13 + 2 * size
    assert paillier.decode_ciphertexts(pk, data, 2) == [c1, c2]
    assert paillier.peek_key_id(data) == KAT_KEY_ID


def _with_ciphertext(pk: paillier.PaillierPublicKey, c: int) -> bytes:
    data = bytearray(paillier.encode_ciphertexts(pk, [1]))
    data[13:] = c.to_bytes(pk.ciphertext_size, "big")
    return bytes(data)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda pk, good: good[:-1], "bytes"),
        (lambda pk, good: good + b"\x00", "bytes"),
        (lambda pk, good: b"\x02" + good[1:], "version"),
        (lambda pk, good: good[:5], "short header"),
        (lambda pk, good: good[:9] + b"\x00\x00\x00\x02" + good[13:], "entries"),
        (lambda pk, good: _with_ciphertext(pk, 0), "range"),
        (lambda pk, good: _with_ciphertext(pk, pk.nsquare), "range"),
        (lambda pk, good: _with_ciphertext(pk, KAT_P), "unit"),
    ],
)
def test_decode_rejections(kat_keys, build, match) -> None:
    pk, _ = kat_keys
    good = paillier.encode_ciphertexts(pk, [paillier.encrypt(pk, 5)])
    assert paillier.decode_ciphertexts(pk, good, 1)
    with pytest.raises(DecodeError, match=match):
        paillier.decode_ciphertexts(pk, build(pk, good), 1)


def test_decode_rejects_other_key_id(keys, kat_keys) -> None:
    pk, _ = keys
    other, _ = kat_keys
    data = paillier.encode_ciphertexts(other, [paillier.encrypt(other, 5)])
    with pytest.raises(WrongKey, match="another key") as info:
        paillier.decode_ciphertexts(pk, data, 1)
    assert not isinstance(info.value, DecodeError)


# --- secret key at rest -----------------------------------------------------------


def test_secret_key_file_round_trip(tmp_path, keys) -> None:
    pk, sk = keys
    path = tmp_path / "collector.key"
    sk.save(path, b"correct horse", log2_n=14)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = paillier.PaillierSecretKey.load(path, b"correct horse", insecure_test_bits=TEST_BITS)
    assert loaded.key_id == pk.key_id
    assert paillier.decrypt(loaded, paillier.encrypt(pk, -123)) == -123
    assert format(pk.n, "x") not in path.read_text()  # p, q (and so n's factors) are not in clear
    with pytest.raises(FileExistsError):
        sk.save(path, b"other", log2_n=14)


def test_secret_key_file_wrong_passphrase(keys) -> None:
    _, sk = keys
    sealed = sk.seal(b"right", log2_n=14)
    with pytest.raises(key_storage.KeyFileError, match="passphrase"):
        paillier.PaillierSecretKey.unseal(sealed, b"wrong", insecure_test_bits=TEST_BITS)


def test_secret_key_file_key_id_is_bound(keys) -> None:
    _, sk = keys
    doc = json.loads(sk.seal(b"pw", log2_n=14))
    doc["key_id"] = "00" * 8
    with pytest.raises(key_storage.KeyFileError, match="passphrase or tampered"):
        paillier.PaillierSecretKey.unseal(json.dumps(doc).encode(), b"pw", insecure_test_bits=TEST_BITS)


def test_secret_key_file_kind_is_checked(keys) -> None:
    _, sk = keys
    sealed = key_storage.seal_secret(b"x", b"pw", kind="ckks-secret-context", key_id=sk.key_id, log2_n=14)
    with pytest.raises(key_storage.KeyFileError, match="expected 'paillier-sk'"):
        paillier.PaillierSecretKey.unseal(sealed, b"pw", insecure_test_bits=TEST_BITS)


def test_secret_key_file_with_mismatched_payload(keys) -> None:
    _, sk = keys
    body = json.dumps({"p": format(KAT_P, "x"), "q": format(KAT_Q, "x")}).encode()
    sealed = key_storage.seal_secret(body, b"pw", kind=paillier.KEY_FILE_KIND, key_id=sk.key_id, log2_n=14)
    with pytest.raises(key_storage.KeyFileError, match="key id does not match"):
        paillier.PaillierSecretKey.unseal(sealed, b"pw", insecure_test_bits=511)


def test_key_file_refuses_group_readable(tmp_path, keys) -> None:
    _, sk = keys
    path = tmp_path / "k"
    sk.save(path, b"pw", log2_n=14)
    os.chmod(path, 0o644)
    with pytest.raises(key_storage.KeyFileError, match="group/others"):
        paillier.PaillierSecretKey.load(path, b"pw", insecure_test_bits=TEST_BITS)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("nonce"), "fields"),
        (lambda d: d.update(v=2), "version"),
        (lambda d: d["kdf"].update(log2_n=10), "scrypt parameters"),
        (lambda d: d["kdf"].update(alg="pbkdf2"), "KDF"),
        (lambda d: d.update(nonce="00"), "nonce"),
        (lambda d: d.update(ct="zz"), "malformed"),
    ],
)
def test_key_file_format_rejections(keys, mutate, match) -> None:
    _, sk = keys
    doc = json.loads(sk.seal(b"pw", log2_n=14))
    mutate(doc)
    with pytest.raises(key_storage.KeyFileError, match=match):
        paillier.PaillierSecretKey.unseal(json.dumps(doc).encode(), b"pw", insecure_test_bits=TEST_BITS)


def test_seal_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="passphrase"):
        key_storage.seal_secret(b"x", b"", kind="k", key_id="id")
    with pytest.raises(ValueError, match="log2_n"):
        key_storage.seal_secret(b"x", b"pw", kind="k", key_id="id", log2_n=12)


def test_gmpy2_is_used_by_phe() -> None:
    from phe import util

    assert util.HAVE_GMP
