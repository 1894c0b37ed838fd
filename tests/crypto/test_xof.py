"""crypto.xof: the draft's XOF vectors, streaming behaviour, rejection sampling."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tests.paths import REPO, OUR_VECTORS, VDAF_VECTORS  # noqa: F401
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto.field import Field64, Field64Small, Field128, _PrimeField
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.field_native import Field64Native, Field128Native, native_built
from twinmpc.crypto.xof import Xof, XofFixedKeyAes128, XofTurboShake128

# Every backend: object arrays, the numpy word layouts (read in place) and their compiled twins.
BACKENDS = [Field64Small, Field64, Field128, Field128Limbs] + ([Field64Native, Field128Native] if native_built() else [])

SHARED = VDAF_VECTORS


def _load(name: str) -> dict[str, object]:
    path = SHARED / f"{name}.json"
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing {path}")
        pytest.skip(f"LOUD SKIP: official XOF vector {path} not found")
    return json.loads(path.read_text())


@pytest.mark.parametrize("xof, name", [(XofTurboShake128, "XofTurboShake128"), (XofFixedKeyAes128, "XofFixedKeyAes128")])
def test_official_vectors(xof: type[Xof], name: str) -> None:
    doc = _load(name)
    seed, dst, binder = (bytes.fromhex(str(doc[k])) for k in ("seed", "dst", "binder"))
    assert xof.derive_seed(seed, dst, binder).hex() == doc["derived_seed"]
    vec = xof.expand_into_vec(Field128, seed, dst, binder, int(doc["length"]))  # type: ignore[arg-type]
    assert Field128.encode_vec(vec).hex() == doc["expanded_vec_field128"]


@pytest.mark.parametrize("xof", [XofTurboShake128, XofFixedKeyAes128])
def test_next_is_a_stream(xof: type[Xof]) -> None:
    seed = bytes(range(xof.SEED_SIZE))
    whole = xof(seed, b"dst", b"binder").next(300)  # type: ignore[call-arg]
    x = xof(seed, b"dst", b"binder")  # type: ignore[call-arg]
    parts = b"".join(x.next(k) for k in (0, 1, 15, 16, 17, 3, 100, 148))
    assert parts == whole
    assert "redacted" in repr(x)
    assert xof(seed, b"dst", b"other").next(32) != whole[:32]  # type: ignore[call-arg]
    assert xof(seed, b"dsu", b"binder").next(32) != whole[:32]  # type: ignore[call-arg]


def test_turboshake_framing_known_answer() -> None:
    """Section 6.2.1: message = len(dst) (2 LE) || dst || len(seed) (1) || seed || binder, domain 1."""
    from Crypto.Hash import TurboSHAKE128

    seed, dst, binder = bytes(32), b"\x01\x02", b"xyz"
    msg = b"\x02\x00" + dst + b"\x20" + seed + binder
    assert XofTurboShake128(seed, dst, binder).next(40) == TurboSHAKE128.new(domain=1, data=msg).read(40)


@settings(max_examples=200, deadline=None)
@given(seed=st.binary(max_size=64), dst=st.binary(max_size=300), binder=st.binary(max_size=400),
       reads=st.lists(st.integers(0, 400), max_size=6))
def test_turboshake_matches_pycryptodome(seed: bytes, dst: bytes, binder: bytes, reads: list[int]) -> None:
    """xoflib (our TurboSHAKE128) and pycryptodome agree on any framing and read pattern,
    including messages crossing the 168-byte rate and the domain-2 key of XofFixedKeyAes128."""
    from Crypto.Hash import TurboSHAKE128

    msg = len(dst).to_bytes(2, "little") + dst + bytes([len(seed)]) + seed + binder
    ours, ref = XofTurboShake128(seed, dst, binder), TurboSHAKE128.new(domain=1, data=msg)
    for n in reads:
        assert ours.next(n) == ref.read(n)
    from xoflib import turbo_shake128

    assert turbo_shake128(2, msg).read(16) == TurboSHAKE128.new(domain=2, data=msg).read(16)


@pytest.mark.parametrize("xof", [XofTurboShake128, XofFixedKeyAes128])
@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.binary(max_size=300), max_size=5), big=st.booleans())
def test_binder_in_parts_is_the_concatenation(xof: type[Xof], parts: list[bytes], big: bool) -> None:
    """A binder given as parts (bytes, memoryviews, arrays) hashes exactly as their concatenation,
    also past the length from which a whole binder is absorbed rather than concatenated."""
    if big:
        parts = parts + [bytes(range(256)) * 20]
    seed = bytes(range(xof.SEED_SIZE))
    whole = b"".join(parts)
    mixed = tuple(memoryview(p) if i % 3 == 1 else np.frombuffer(p, dtype=np.uint8) if i % 3 == 2 else p
                  for i, p in enumerate(parts))
    want = xof(seed, b"dst", whole).next(200)  # type: ignore[call-arg]
    assert xof(seed, b"dst", mixed).next(200) == want  # type: ignore[call-arg]
    assert xof.derive_seed(seed, b"dst", mixed) == want[: xof.SEED_SIZE]


@pytest.mark.parametrize("xof", [XofTurboShake128, XofFixedKeyAes128])
def test_next_into_continues_the_stream(xof: type[Xof]) -> None:
    seed = bytes(range(xof.SEED_SIZE))
    whole = xof(seed, b"d", b"b").next(500)  # type: ignore[call-arg]
    x = xof(seed, b"d", b"b")  # type: ignore[call-arg]
    first, words = np.empty(3, dtype=np.uint8), np.empty(40, dtype="<u8")
    x.next_into(first)
    x.next_into(words)
    assert first.tobytes() + words.tobytes() + x.next(177) == whole


def test_parameter_validation() -> None:
    with pytest.raises(ValueError):
        XofFixedKeyAes128(bytes(15), b"", b"")
    with pytest.raises(ValueError):
        XofTurboShake128(bytes(256), b"", b"")
    with pytest.raises(ValueError):
        XofTurboShake128(bytes(32), bytes(65536), b"")


class ScriptedStream(Xof):
    """A byte stream fixed by the test, to drive next_vec through its rejection branch."""

    SEED_SIZE = 0

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def next(self, length: int) -> bytes:
        out = self.data[self.pos : self.pos + length]
        self.pos += length
        return out


def reference_next_vec(stream: bytes, field: type[_PrimeField], length: int) -> tuple[list[int], int]:
    """The draft's next_vec, one element at a time (Section 6.2)."""
    size = field.ENCODED_SIZE
    mask = (1 << field.MODULUS.bit_length()) - 1
    out, pos = [], 0
    while len(out) < length:
        x = int.from_bytes(stream[pos : pos + size], "little") & mask
        pos += size
        if x < field.MODULUS:
            out.append(x)
    return out, pos


@pytest.mark.parametrize("field", BACKENDS, ids=lambda f: f.__name__)
def test_next_vec_rejection_sampling(field: type[_PrimeField]) -> None:
    size = field.ENCODED_SIZE
    top = (2 ** (8 * size) - 1).to_bytes(size, "little")  # >= p: rejected
    pmod = field.MODULUS.to_bytes(size, "little")  # == p: rejected
    ok = [(7).to_bytes(size, "little"), (field.MODULUS - 1).to_bytes(size, "little")]
    stream = top + ok[0] + pmod + top + ok[1] + ok[0] + ok[1] + bytes(size * 4)
    expected, consumed = reference_next_vec(stream, field, 4)
    xof = ScriptedStream(stream)
    got = xof.next_vec(field, 4)
    assert field.to_ints(got) == expected == [7, field.MODULUS - 1, 7, field.MODULUS - 1]
    assert xof.pos == consumed  # exactly the bytes the draft's loop reads


@pytest.mark.parametrize("field", BACKENDS, ids=lambda f: f.__name__)
def test_next_vec_matches_reference_on_real_stream(field: type[_PrimeField]) -> None:
    seed = bytes(32)
    stream = XofTurboShake128(seed, b"d", b"b").next(field.ENCODED_SIZE * 300)
    expected, _ = reference_next_vec(stream, field, 250)
    assert field.to_ints(XofTurboShake128(seed, b"d", b"b").next_vec(field, 250)) == expected
