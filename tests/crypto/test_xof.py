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


# ---- the compiled TurboSHAKE128 (crypto/xof_kernel.c) and the fused share kernel ----
needs_kernel = pytest.mark.skipif(not native_built(), reason="LOUD SKIP: twinmpc.crypto._field_kernel is not built")


@pytest.fixture(params=[0, 1, 2], ids=["plain", "avx2", "avx512vl"])
def lanes(request: pytest.FixtureRequest) -> int:
    """Each lane implementation the CPU can run (a level it cannot run falls back to a lower one)."""
    if not native_built():
        pytest.skip("LOUD SKIP: twinmpc.crypto._field_kernel is not built")
    from twinmpc.crypto._field_kernel import lib

    level = lib.ts_set_simd(request.param)
    yield level
    lib.ts_set_simd(-1)


@needs_kernel
def test_native_turboshake_rfc9861_vectors(lanes: int) -> None:
    from twinmpc.crypto.xof import TurboShake128Native

    assert TurboShake128Native(0x1F).read(64).hex() == (
        "1e415f1c5983aff2169217277d17bb538cd945a397ddec541f1ce41af2c1b74c"
        "3e8ccae2a4dae56c84a04c2385c03c15e8193bdf58737363321691c05462c8df"
    )
    assert TurboShake128Native(0x1F).read(10032)[-32:].hex() == (
        "a3b9b0385900ce761f22aed548e754da10a5242d62e8c658e3f3a923a7555607"
    )


@needs_kernel
@settings(max_examples=150, deadline=None)
@given(domain=st.integers(1, 0x7F), chunks=st.lists(st.binary(max_size=400), max_size=5),
       reads=st.lists(st.integers(0, 400), max_size=5))
def test_native_turboshake_matches_xoflib(domain: int, chunks: list[bytes], reads: list[int]) -> None:
    """Any split of the message (block boundaries included) and any read pattern."""
    from xoflib import turbo_shake128

    from twinmpc.crypto.xof import TurboShake128Native

    ours, ref = TurboShake128Native(domain), turbo_shake128(domain, b"".join(chunks))
    for c in chunks:
        ours.absorb(c)
    for n in reads:
        assert ours.read(n) == ref.read(n)


@needs_kernel
def test_lanes_permute_independent_states_like_one_at_a_time(lanes: int) -> None:
    """ts_absorb_many on 1-4 instances (different lengths, so lanes drop out) equals separate absorbs."""
    from xoflib import turbo_shake128

    from twinmpc.crypto._field_kernel import ffi, lib
    from twinmpc.crypto.xof import TurboShake128Native

    rng = np.random.default_rng(lanes)
    for count in (1, 2, 3, 4):
        msgs = [rng.bytes(int(n)) for n in rng.integers(0, 3000, size=count)]
        hs = [TurboShake128Native(1, b"x" * k) for k in range(count)]
        ptrs = ffi.new("void *[]", [h.ptr for h in hs])
        ins = ffi.new("void *[]", [ffi.from_buffer(m) for m in msgs])
        lib.ts_absorb_many(ptrs, ins, ffi.new("int64_t[]", [len(m) for m in msgs]), count)
        for k, (h, m) in enumerate(zip(hs, msgs)):
            assert h.read(300) == turbo_shake128(1, b"x" * k + m).read(300)


def _inject_block(h: object, block: bytes) -> None:
    """Make `block` the next 168 bytes a squeezing instance returns (the state as if just permuted);
    what follows is the permutation of that state, as for any instance."""
    state = h.state  # type: ignore[attr-defined]
    lanes = np.frombuffer(block + bytes(200 - len(block)), dtype="<u8")
    state[:25] = lanes
    state[25], state[26] = 0, 1  # position 0 of a block, squeezing


@needs_kernel
@pytest.mark.parametrize("field", [Field64Native, Field128Native], ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [30, 5000])
def test_fused_share_kernel_is_the_drafts_sampling_loop(field: type[_PrimeField], n: int, lanes: int) -> None:
    """expand_share equals next_vec on the same stream, with rejected candidates (values >= p
    injected into the first block), the share's encoding absorbed into one instance, the
    leader's running share and its encoding into another, and in place."""
    from twinmpc.crypto.xof import TurboShake128Native

    size = field.ENCODED_SIZE
    p = field.MODULUS
    cands = [7, p, 2 ** (8 * size) - 1, 5, p - 1, p + 1] + list(range(1, 168 // size))
    block = b"".join(v.to_bytes(size, "little") for v in cands)[:168]
    source = lambda: _inject_block(h := TurboShake128Native(1), block) or h  # noqa: E731
    stream = source().read(size * (n + 20))
    want, _ = reference_next_vec(stream, field, n)
    assert want[:3] == [7, 5, p - 1]
    rng = np.random.default_rng(n)
    meas = field.from_ints([int(v) for v in rng.integers(0, 2**62, size=n)])
    lead_want = field.sub(meas, field.from_ints(want))

    out, lead = np.empty(n, dtype=field.DTYPE), np.empty(n, dtype=field.DTYPE)
    b, c = TurboShake128Native(1, b"b"), TurboShake128Native(1, b"c")
    field.expand_share(source(), n, out, b, meas, lead, c)  # type: ignore[attr-defined]
    assert field.to_ints(out) == want and np.array_equal(lead, lead_want)
    assert b.read(32) == TurboShake128Native(1, b"b").absorb(field.encode_vec(out)).read(32)
    assert c.read(32) == TurboShake128Native(1, b"c").absorb(field.encode_vec(lead_want)).read(32)

    inplace = meas.copy()
    field.expand_share(source(), n, None, None, inplace, inplace)  # type: ignore[attr-defined]
    assert np.array_equal(inplace, lead_want)
