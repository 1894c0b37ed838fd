"""HPKE sealing (crypto.seal): round trips for every suite, the binding bytes,
config/key (de)serialisation and every rejection path of `open_sealed`."""

from __future__ import annotations

import pytest

from twinmpc.crypto import seal
from twinmpc.crypto.errors import DecodeError, SealError
from twinmpc.crypto.seal import HpkeConfig, HpkeKeypair

SUITE_NAMES = sorted(seal.SUITES)
INFO = seal.binding("test", b"task", b"report")


@pytest.fixture(scope="module", params=SUITE_NAMES)
def keypair(request) -> HpkeKeypair:
    return HpkeKeypair.generate(7, request.param)


def test_suite_table() -> None:
    assert {s.suite_id: name for name, s in seal.SUITES.items()} == {
        1: "x25519-hkdf-sha256-aes128gcm",
        2: "x25519-hkdf-sha256-chacha20poly1305",
        3: "mlkem768x25519-hkdf-sha256-aes128gcm",
    }
    assert seal.DEFAULT_SUITE in seal.SUITES
    with pytest.raises(ValueError, match="unknown HPKE suite"):
        seal.suite_by_name("rsa")


def test_round_trip(keypair: HpkeKeypair) -> None:
    for plaintext in (b"", b"x", bytes(range(256)) * 40):
        sealed = seal.seal(keypair.config, plaintext, INFO)
        assert sealed[0] == 7
        assert seal.open_sealed(keypair, sealed, INFO) == plaintext


def test_sealing_is_randomised(keypair: HpkeKeypair) -> None:
    assert seal.seal(keypair.config, b"same", INFO) != seal.seal(keypair.config, b"same", INFO)


def test_ciphertext_size(keypair: HpkeKeypair) -> None:
    enc = 1088 + 32 if keypair.config.suite.suite_id == 3 else 32
    assert len(seal.seal(keypair.config, bytes(100), INFO)) == 1 + enc + 100 + 16


def test_every_flipped_byte_is_rejected(keypair: HpkeKeypair) -> None:
    sealed = seal.seal(keypair.config, b"share bytes", INFO)
    positions = list(range(1, len(sealed))) if len(sealed) < 200 else [1, 2, 500, 1100, len(sealed) - 17, len(sealed) - 1]
    for pos in positions:
        tampered = bytearray(sealed)
        tampered[pos] ^= 0x01
        with pytest.raises(SealError):
            seal.open_sealed(keypair, bytes(tampered), INFO)


def test_truncated_and_extended_rejected(keypair: HpkeKeypair) -> None:
    sealed = seal.seal(keypair.config, b"share", INFO)
    for bad in (sealed[:-1], sealed[:20], sealed[:1], sealed + b"\x00"):
        with pytest.raises(SealError):
            seal.open_sealed(keypair, bad, INFO)


def test_wrong_info_rejected(keypair: HpkeKeypair) -> None:
    sealed = seal.seal(keypair.config, b"share", INFO)
    for info in (b"", INFO + b"\x00", seal.binding("test", b"task", b"reporT"), seal.binding("tesT", b"task", b"report")):
        with pytest.raises(SealError, match="does not open"):
            seal.open_sealed(keypair, sealed, info)


def test_wrong_key_with_same_config_id_rejected(keypair: HpkeKeypair) -> None:
    other = HpkeKeypair.generate(7, keypair.config.suite.name)
    with pytest.raises(SealError, match="does not open"):
        seal.open_sealed(other, seal.seal(keypair.config, b"share", INFO), INFO)


def test_unknown_config_id_and_empty_rejected(keypair: HpkeKeypair) -> None:
    sealed = seal.seal(keypair.config, b"share", INFO)
    with pytest.raises(SealError, match="unknown HPKE config id"):
        seal.open_sealed(keypair, bytes([8]) + sealed[1:], INFO)
    with pytest.raises(SealError):
        seal.open_sealed(keypair, b"", INFO)


def test_keypair_serialisation_round_trip(keypair: HpkeKeypair) -> None:
    name = keypair.config.suite.name
    again = HpkeKeypair.from_private_bytes(7, name, keypair.private_bytes())
    assert again.config == keypair.config
    assert seal.open_sealed(again, seal.seal(keypair.config, b"k", INFO), INFO) == b"k"
    assert len(keypair.private_bytes()) == (96 if keypair.config.suite.suite_id == 3 else 32)


def test_keypair_repr_redacts_private_key(keypair: HpkeKeypair) -> None:
    text = repr(keypair)
    assert "redacted" in text
    raw = keypair.private_bytes()
    assert raw.hex() not in text and str(raw) not in text
    assert "_private" not in text


def test_config_encoding_round_trip(keypair: HpkeKeypair) -> None:
    data = keypair.config.encode()
    pk = keypair.config.public_key
    assert data[:4] == bytes([7, keypair.config.suite.suite_id]) + len(pk).to_bytes(2, "big")
    assert data[4:] == pk
    assert HpkeConfig.decode(data) == keypair.config


@pytest.mark.parametrize("cut", [0, 3, 4, -1])
def test_config_truncated_rejected(keypair: HpkeKeypair, cut: int) -> None:
    with pytest.raises(DecodeError):
        HpkeConfig.decode(keypair.config.encode()[:cut])


def test_config_trailing_bytes_rejected(keypair: HpkeKeypair) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        HpkeConfig.decode(keypair.config.encode() + b"\x00")


def test_config_unknown_suite_rejected(keypair: HpkeKeypair) -> None:
    data = bytearray(keypair.config.encode())
    data[1] = 99
    with pytest.raises(DecodeError, match="unknown HPKE suite id 99"):
        HpkeConfig.decode(bytes(data))


def test_config_public_key_of_other_suite_rejected() -> None:
    x = HpkeKeypair.generate(1, "x25519-hkdf-sha256-aes128gcm").config.encode()
    as_hybrid = bytes([1, 3]) + x[2:]
    with pytest.raises(DecodeError, match="hybrid HPKE public key"):
        HpkeConfig.decode(as_hybrid)
    with pytest.raises(DecodeError, match="X25519 HPKE public key"):
        HpkeConfig.decode(bytes([1, 1, 0, 31]) + bytes(31))


@pytest.mark.parametrize("config_id", [-1, 256])
def test_config_id_range(config_id: int) -> None:
    pk = HpkeKeypair.generate().config.public_key
    with pytest.raises(ValueError, match="one byte"):
        HpkeConfig(config_id, seal.suite_by_name(seal.DEFAULT_SUITE), pk)


@pytest.mark.parametrize(("suite", "size"), [("x25519-hkdf-sha256-aes128gcm", 31), ("mlkem768x25519-hkdf-sha256-aes128gcm", 32)])
def test_private_key_wrong_length_rejected(suite: str, size: int) -> None:
    with pytest.raises(DecodeError, match="private key"):
        HpkeKeypair.from_private_bytes(0, suite, bytes(size))


def test_binding_layout() -> None:
    # "twinmpc/v1/hpke" "/" label 0x00 then (u32 BE length | part) per part
    assert seal.binding("lbl", b"ab", b"").hex() == (
        b"twinmpc/v1/hpke/lbl".hex() + "00" + "00000002" + "6162" + "00000000"
    )


def test_binding_is_unambiguous() -> None:
    assert seal.binding("l", b"ab", b"c") != seal.binding("l", b"a", b"bc")
    assert seal.binding("l", b"abc") != seal.binding("l", b"ab", b"c")
    assert seal.binding("l", b"") != seal.binding("l")
    assert seal.binding("a", b"") != seal.binding("a\x00")


def test_digest_is_sha256() -> None:
    assert seal.digest(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
