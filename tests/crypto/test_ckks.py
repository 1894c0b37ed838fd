"""crypto.ckks: parameters, public context without secret key, chunking, precision bound, decoding."""

from __future__ import annotations

import json
import os
import stat
import struct

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import ckks, key_storage
from twinmpc.crypto.errors import DecodeError, WrongKey


@pytest.fixture(scope="module")
def secret() -> ckks.CkksSecretContext:
    return ckks.generate_context()


@pytest.fixture(scope="module")
def pub(secret) -> ckks.CkksPublicContext:
    return ckks.CkksPublicContext.from_bytes(secret.public.to_bytes())


# --- parameters --------------------------------------------------------------------


def test_default_parameters() -> None:
    p = ckks.DEFAULT_PARAMS
    assert (p.poly_modulus_degree, p.coeff_mod_bit_sizes, p.global_scale_bits) == (8192, (60, 40, 60), 40)
    assert p.slots == 4096
    assert p.data_levels == 2
    assert p.max_abs_sum == 2.0**59
    assert p.chunks_for(1) == 1 and p.chunks_for(4096) == 1 and p.chunks_for(4097) == 2 and p.chunks_for(10_000) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"poly_modulus_degree": 4096}, "poly_modulus_degree"),
        ({"coeff_mod_bit_sizes": (60, 60, 60, 60)}, "128-bit"),
        ({"coeff_mod_bit_sizes": (60,)}, "prime sizes"),
        ({"coeff_mod_bit_sizes": [60, 40, 60]}, "tuple"),
        ({"global_scale_bits": 60}, "scale"),
    ],
)
def test_parameter_rejections(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        ckks.CkksParams(**kwargs)


def test_params_json_round_trip() -> None:
    p = ckks.CkksParams(8192, (60, 40, 40, 60), 40)
    assert ckks.CkksParams.from_json(p.to_json()) == p
    with pytest.raises(ValueError, match="fields"):
        ckks.CkksParams.from_json(b'{"poly_modulus_degree": 8192}')


# --- contexts ----------------------------------------------------------------------


def test_public_context_has_no_secret_key(pub, secret) -> None:
    assert pub.key_id == secret.key_id
    assert pub._ctx.is_private() is False
    assert pub._ctx.has_secret_key() is False
    assert "redacted" in repr(secret)


def test_public_context_bundle_layout(secret) -> None:
    data = secret.public.to_bytes()
    assert data[0] == 1
    (plen,) = struct.unpack(">H", data[9:11])
    assert json.loads(data[11 : 11 + plen]) == json.loads(ckks.DEFAULT_PARAMS.to_json())
    assert data[1:9].hex() == secret.key_id


def test_public_context_rejects_tampering(secret) -> None:
    data = bytearray(secret.public.to_bytes())
    data[-100] ^= 1
    with pytest.raises(DecodeError, match="key id"):
        ckks.CkksPublicContext.from_bytes(bytes(data))
    with pytest.raises(DecodeError, match="short"):
        ckks.CkksPublicContext.from_bytes(b"\x01abc")
    with pytest.raises(DecodeError, match="truncated"):
        ckks.CkksPublicContext.from_bytes(bytes(data[:11]))


def test_public_context_rejects_bundled_secret_key(secret) -> None:
    params_json = ckks.DEFAULT_PARAMS.to_json()
    ctx_bytes = secret._ctx.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    key_id = ckks._key_id(params_json, ctx_bytes)
    forged = b"\x01" + key_id + struct.pack(">H", len(params_json)) + params_json + ctx_bytes
    with pytest.raises(DecodeError, match="secret key"):
        ckks.CkksPublicContext.from_bytes(forged)


def test_public_context_rejects_garbage_context() -> None:
    params_json = ckks.DEFAULT_PARAMS.to_json()
    junk = b"not a seal context"
    forged = b"\x01" + ckks._key_id(params_json, junk) + struct.pack(">H", len(params_json)) + params_json + junk
    with pytest.raises(DecodeError, match="does not parse"):
        ckks.CkksPublicContext.from_bytes(forged)


def test_public_context_rejects_params_that_do_not_match(secret) -> None:
    params_json = ckks.CkksParams(8192, (60, 40, 40, 60), 40).to_json()
    ctx_bytes = secret._ctx.serialize(save_secret_key=False, save_galois_keys=False, save_relin_keys=False)
    forged = b"\x01" + ckks._key_id(params_json, ctx_bytes) + struct.pack(">H", len(params_json)) + params_json + ctx_bytes
    with pytest.raises(DecodeError, match="stated parameters"):
        ckks.CkksPublicContext.from_bytes(forged)


def test_public_context_constructor_refuses_secret(secret) -> None:
    with pytest.raises(ValueError, match="secret key"):
        ckks.CkksPublicContext(secret.params, secret._ctx, b"", bytes(8))


def test_secret_context_file_round_trip(tmp_path, secret, pub) -> None:
    path = tmp_path / "ckks.key"
    secret.save(path, b"pw", log2_n=14)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = ckks.CkksSecretContext.load(path, b"pw")
    assert loaded.key_id == secret.key_id
    x = np.array([1.5, -2.25, 3.0])
    assert np.allclose(loaded.decrypt(pub.encrypt(x)), x, atol=2.0**-20)
    with pytest.raises(key_storage.KeyFileError, match="passphrase"):
        ckks.CkksSecretContext.load(path, b"wrong")


def test_secret_context_file_rejects_another_keys_id(secret) -> None:
    other = ckks.generate_context()
    doc = json.loads(secret.seal(b"pw", log2_n=14))
    other_doc = json.loads(other.seal(b"pw", log2_n=14))
    doc["key_id"] = other_doc["key_id"]
    with pytest.raises(key_storage.KeyFileError, match="tampered"):
        ckks.CkksSecretContext.unseal(json.dumps(doc).encode(), b"pw")


# --- encryption, chunking, precision ---------------------------------------------------


@pytest.mark.parametrize("length", [1, 4096, 4097, 10_000])
def test_chunking_round_trip(pub, secret, length) -> None:
    x = np.random.default_rng(length).uniform(-50, 50, length)
    chunks = pub.encrypt(x)
    assert len(chunks) == ckks.DEFAULT_PARAMS.chunks_for(length)
    data = ckks.encode_ciphertext(pub, chunks, length)
    out = secret.decrypt(ckks.decode_ciphertext(pub, data, length))
    assert out.shape == (length,)
    assert np.max(np.abs(out - x)) <= ckks.SUM_ERROR_PER_SUMMAND


def test_sum_error_bound_for_many_vectors(pub, secret) -> None:
    """|dec(sum of M) - sum| <= M * 2^-20 per slot; measured error is ~2^-26 * sqrt(M)."""
    m, length = 64, 5000
    xs = np.random.default_rng(7).uniform(-1000, 1000, (m, length))
    acc = ckks.decode_ciphertext(pub, ckks.encode_ciphertext(pub, pub.encrypt(xs[0]), length), length)
    for x in xs[1:]:
        acc = ckks.add(acc, ckks.decode_ciphertext(pub, ckks.encode_ciphertext(pub, pub.encrypt(x), length), length))
    err = np.max(np.abs(secret.decrypt(acc) - xs.sum(axis=0)))
    assert err <= m * ckks.SUM_ERROR_PER_SUMMAND
    assert err > 0  # CKKS is approximate: an exact result would mean we are not testing CKKS


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=32))
def test_encrypt_decrypt_property(pub, secret, values) -> None:
    x = np.array(values)
    out = secret.decrypt(pub.encrypt(x))
    assert np.max(np.abs(out - x)) <= ckks.SUM_ERROR_PER_SUMMAND


@pytest.mark.parametrize("bad", [np.array([]), np.array([[1.0]]), np.array([np.nan]), np.array([np.inf])])
def test_encrypt_rejects_bad_plaintext(pub, bad) -> None:
    with pytest.raises(ValueError):
        pub.encrypt(bad)


def test_add_rejects_chunk_count_mismatch(pub) -> None:
    with pytest.raises(ValueError, match="chunk count"):
        ckks.add(pub.encrypt(np.ones(5000)), pub.encrypt(np.ones(10)))


# --- decoding untrusted ciphertexts -------------------------------------------------


@pytest.fixture(scope="module")
def good(pub) -> bytes:
    return ckks.encode_ciphertext(pub, pub.encrypt(np.arange(10.0)), 10)


def _frame(pub, blobs: list[bytes], length: int, nchunks: int | None = None) -> bytes:
    head = struct.pack(">B8sIH", 1, pub.key_id_bytes, length, len(blobs) if nchunks is None else nchunks)
    return head + b"".join(struct.pack(">I", len(b)) + b for b in blobs)


def test_encoding_layout_annotated(pub, good) -> None:
    assert good[:1].hex() == "01"  # version
    assert good[1:9].hex() == pub.key_id  # key id
    assert good[9:13].hex() == "0000000a"  # length 10
    assert good[13:15].hex() == "0001"  # one chunk
    (blen,) = struct.unpack(">I", good[15:19])
    assert len(good) == 19 + blen
    assert ckks.peek_key_id(good) == pub.key_id


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda pub, g: g[:5], "short header"),
        (lambda pub, g: b"\x02" + g[1:], "version"),
        (lambda pub, g: g + b"\x00", "trailing"),
        (lambda pub, g: g[:-10], "out of bounds"),
        (lambda pub, g: g[:15], "truncated"),
        (lambda pub, g: g[:9] + struct.pack(">I", 11) + g[13:], "length 11"),
        (lambda pub, g: g[:13] + struct.pack(">H", 2) + g[15:], "chunks"),
        (lambda pub, g: _frame(pub, [os.urandom(1000)], 10), "does not deserialise"),
        (lambda pub, g: g[:15] + struct.pack(">I", 10**8) + g[19:], "larger than|out of bounds"),
    ],
)
def test_decode_rejections(pub, good, build, match) -> None:
    assert ckks.decode_ciphertext(pub, good, 10)
    with pytest.raises(DecodeError, match=match):
        ckks.decode_ciphertext(pub, build(pub, good), 10)


def test_decode_rejects_wrong_slot_count(pub) -> None:
    data = _frame(pub, [pub.encrypt(np.ones(9))[0].serialize()], 10)
    with pytest.raises(DecodeError, match="9 slots"):
        ckks.decode_ciphertext(pub, data, 10)


def test_decode_rejects_wrong_scale(pub) -> None:
    odd = ts.ckks_vector(pub._ctx, [1.0] * 10, scale=2.0**30)
    with pytest.raises(DecodeError, match="scale"):
        ckks.decode_ciphertext(pub, _frame(pub, [odd.serialize()], 10), 10)


def test_decode_rejects_wrong_level(pub) -> None:
    lower = pub.encrypt(np.ones(10))[0] * ([1.0] * 10)  # multiply + rescale drops one prime
    with pytest.raises(DecodeError, match="level"):
        ckks.decode_ciphertext(pub, _frame(pub, [lower.serialize()], 10), 10)


def test_decode_rejects_other_key(pub) -> None:
    other = ckks.generate_context().public
    data = ckks.encode_ciphertext(other, other.encrypt(np.ones(10)), 10)
    with pytest.raises(WrongKey, match="another key") as info:
        ckks.decode_ciphertext(pub, data, 10)
    assert not isinstance(info.value, DecodeError)


def test_decode_survives_bit_flips(pub, good) -> None:
    """Random corruption is rejected with DecodeError or yields a well-formed ciphertext, never a crash."""
    rng = np.random.default_rng(3)
    rejected = 0
    for _ in range(60):
        data = bytearray(good)
        pos = int(rng.integers(19, len(data)))
        data[pos] ^= int(rng.integers(1, 256))
        try:
            chunks = ckks.decode_ciphertext(pub, bytes(data), 10)
        except DecodeError:
            rejected += 1
        else:
            assert len(chunks) == 1 and chunks[0].size() == 10
    assert rejected > 0
