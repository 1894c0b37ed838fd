"""The compiled field kernel (crypto.field_native) against the numpy reference backends.

Edge elements (0, 1, p-1, values whose limbs are all ones, powers of two at
the fold boundaries) go through every operation, with the operand shapes
Prio3 uses: equal shapes, broadcast constants and columns, strided and
reversed views, reductions along every axis, and transforms of every size.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import poly
from twinmpc.crypto.errors import DecodeError
from twinmpc.crypto.field import Field64
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.field_native import Field64Native, Field128Native, native_built

if not native_built():
    if os.environ.get("CI") == "true":
        pytest.fail("twinmpc.crypto._field_kernel is not built", pytrace=False)
    pytest.skip("LOUD SKIP: twinmpc.crypto._field_kernel is not built (pip install -e .)", allow_module_level=True)

PAIRS = [(Field64, Field64Native), (Field128Limbs, Field128Native)]


def _elems(p: int) -> st.SearchStrategy[int]:
    edges = [0, 1, 2, p - 1, p - 2, (p - 1) // 2, 2**32 - 1, 2**32, 2**63, 2**64 - 1 if p > 2**64 else p - 3]
    if p > 2**64:
        edges += [2**64, 2**96, 2**127, 28 * 2**64 - 1, p - 2**64, (2**64 - 29) << 64 | (2**64 - 1)]
    return st.one_of(st.sampled_from(edges), st.integers(0, p - 1))


@pytest.mark.parametrize("ref, nat", PAIRS, ids=lambda f: f.__name__)
def test_element_wise_ops_match_the_reference(ref, nat) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=60, deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        rows, cols = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 9))
        xs = data.draw(st.lists(_elems(ref.MODULUS), min_size=rows * cols, max_size=rows * cols))
        ys = data.draw(st.lists(_elems(ref.MODULUS), min_size=rows * cols, max_size=rows * cols))
        a, b = ref.from_ints(xs).reshape(rows, cols), ref.from_ints(ys).reshape(rows, cols)
        operands = [
            (a, b),  # same shape
            (a, b[:1]),  # a broadcast row
            (a, b[:, :1]),  # a broadcast column
            (a, ref.const(ys[0])),  # a constant
            (a[:, ::2], b[:, ::2]),  # strided views
            (a[:, ::2], b[-1, ::2]),  # strided view and a strided broadcast row
            (a[::-1], b),  # reversed rows
            (a.T, b.T),  # transposed
        ]
        for x, y in operands:
            for op in ("add", "sub", "mul"):
                got, want = getattr(nat, op)(x, y), getattr(ref, op)(x, y)
                assert got.shape == want.shape and np.array_equal(got, want), op
        assert np.array_equal(nat.neg(a), ref.neg(a))

    check()


@pytest.mark.parametrize("ref, nat", PAIRS, ids=lambda f: f.__name__)
def test_sums_of_products_match_the_reference(ref, nat) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=40, deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
        size = int(np.prod(shape))
        a = ref.from_ints(data.draw(st.lists(_elems(ref.MODULUS), min_size=size, max_size=size))).reshape(shape)
        b = ref.from_ints(data.draw(st.lists(_elems(ref.MODULUS), min_size=size, max_size=size))).reshape(shape)
        for axis in range(-len(shape), len(shape)):
            assert np.array_equal(nat.sum(a, axis=axis), ref.sum(a, axis=axis))
            assert np.array_equal(nat.mul_sum(a, b, axis=axis), ref.mul_sum(a, b, axis=axis))
        col = b.reshape(-1)[: shape[-1]]
        assert np.array_equal(nat.mul_sum(a, col), ref.mul_sum(a, col))
        m = b.reshape(-1)[: shape[-1]].reshape(shape[-1], 1)
        assert np.array_equal(nat.matmul(a, m), ref.matmul(a, m))

    check()


def test_long_sums_keep_every_carry() -> None:
    """Column sums of many maximal products (p-1)^2 exercise the lazy accumulators' top words."""
    for ref, nat in PAIRS:
        n = 5000
        a = ref.from_ints([ref.MODULUS - 1] * n)
        assert ref.to_ints(nat.mul_sum(a, a)) == [n % ref.MODULUS]
        assert ref.to_ints(nat.sum(a)) == [(-n) % ref.MODULUS]


@pytest.mark.parametrize("ref, nat", PAIRS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [1, 2, 4, 16, 128, 1024])
def test_ntt_matches_the_reference(ref, nat, n: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(n)
    rows = 3
    vals = [int(x) for x in rng.integers(0, 2**62, size=rows * n)]
    vals[0], vals[-1] = ref.MODULUS - 1, ref.MODULUS - 2
    a = ref.from_ints(vals).reshape(rows, n)
    for inverse in (False, True):
        for scale in (False, True):
            got = poly.ntt(nat, a, inverse=inverse, scale=scale)
            assert np.array_equal(got, poly.ntt(ref, a, inverse=inverse, scale=scale))
    assert np.array_equal(poly.ntt(nat, poly.ntt(nat, a), inverse=True), a)  # round trip
    assert np.array_equal(poly.extend_values(nat, a, 2 * n), poly.extend_values(ref, a, 2 * n))


def test_native_twins_share_the_reference_layout() -> None:
    """Conversions between a backend and its native twin are free: the same array comes back."""
    x = Field128Limbs.from_ints([1, 2, Field128Limbs.MODULUS - 1])
    assert Field128Native.from_backend(Field128Limbs, x) is x and Field128Limbs.from_backend(Field128Native, x) is x
    y = Field64.from_ints([5, Field64.MODULUS - 1])
    assert Field64Native.from_backend(Field64, y) is y and Field64.from_backend(Field64Native, y) is y
    assert Field128Native.encode_vec(x) == Field128Limbs.encode_vec(x)


def test_fused_prover_kernel_gives_the_same_values_on_any_thread_count(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """parallel_mul_extend: the fused kernel (1 or 2 threads) equals extend_values + sum of products."""
    from twinmpc.crypto import field_native

    monkeypatch.setattr(field_native, "PMUL_THREADS_MIN", 0)
    rng = np.random.default_rng(5)
    for ref, nat in PAIRS:
        vals = [int(x) for x in rng.integers(0, 2**62, size=2 * 10 * 16)]
        vals[:3] = [ref.MODULUS - 1] * 3
        wires = ref.from_ints(vals).reshape(2, 10, 16)
        want = poly.parallel_mul_extend(ref, wires, 32)
        for threads in ("1", "2", "3"):
            monkeypatch.setenv(field_native.THREADS_ENV, threads)
            assert np.array_equal(poly.parallel_mul_extend(nat, wires, 32), want), threads


@pytest.fixture(params=[0, 1], ids=["scalar", "ifma"])
def ifma(request: pytest.FixtureRequest) -> int:
    """Field128 kernels on the scalar path and on AVX-512 IFMA lanes (where the CPU has them)."""
    from twinmpc.crypto._field_kernel import lib

    level = lib.f128_set_ifma(request.param)
    if request.param and not level:
        pytest.skip("this CPU has no AVX-512 IFMA")
    yield level
    lib.f128_set_ifma(-1)


def _edge_or_random(ref, rng, shape):  # type: ignore[no-untyped-def]
    """Elements of `shape`, about a quarter of them edge values (0, 1, p-1, limb and fold boundaries)."""
    p = ref.MODULUS
    edges = [0, 1, p - 1, p - 2, 2**63, 2**64 - 1 if p > 2**64 else p - 3]
    if p > 2**64:
        edges += [2**64, 2**104 - 1, 2**104, 2**127, p - 2**64, (p >> 52) << 52, 2**52 - 1, 2**52]
    size = int(np.prod(shape))
    vals = [int(v) for v in rng.integers(0, 2**62, size=size)]
    for k in rng.integers(0, size, size=size // 4):
        vals[int(k)] = edges[int(k) % len(edges)]
    return ref.from_ints(vals).reshape(shape)


def test_range_check_kernels_match_the_reference(monkeypatch, ifma) -> None:  # type: ignore[no-untyped-def]
    """The compiled range-check wires and weighted sums equal the numpy formulas (ragged last call,
    edge elements), the sums on any thread count (calls split in blocks of four or, on IFMA lanes,
    slots split; uneven splits included)."""
    from twinmpc.crypto import field_native
    from twinmpc.mpc.prio3.range_check import range_check_wire_evals_rows, range_check_wires_rows

    monkeypatch.setattr(field_native, "PMUL_THREADS_MIN", 0)
    rng = np.random.default_rng(9)
    for ref, nat in PAIRS:
        rand = lambda *shape: _edge_or_random(ref, rng, shape)  # noqa: E731
        for n, chunk in ((23, 5), (8, 8), (9, 1), (30, 7), (300, 3), (1000, 7), (3000, 2)):
            calls = -(-n // chunk)
            x, r, lam, c = rand(3, n), rand(3, calls), rand(3, calls), ref.const(ref.s_inv(2))
            assert np.array_equal(range_check_wires_rows(nat, x, r, chunk, calls, c), range_check_wires_rows(ref, x, r, chunk, calls, c))
            want = range_check_wire_evals_rows(ref, x, r, chunk, calls, c, lam)
            for threads in ("1", "2", "3"):
                monkeypatch.setenv(field_native.THREADS_ENV, threads)
                assert np.array_equal(range_check_wire_evals_rows(nat, x, r, chunk, calls, c, lam), want), threads


@pytest.mark.parametrize("ref, nat", PAIRS, ids=lambda f: f.__name__)
def test_lagrange_kernel_matches_the_python_formula(ref, nat) -> None:  # type: ignore[no-untyped-def]
    """The compiled barycentric weights equal the Python-int formula, and a root gives the indicator."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 16, 512):
        for t in [int(x) for x in rng.integers(0, 2**62, size=3)] + [ref.root_of_unity(n) if n > 1 else 1]:
            got, want = poly.lagrange_weights(nat, t, n), poly.lagrange_weights(ref, t, n)
            assert np.array_equal(got, want), (n, t)


@pytest.mark.parametrize("length, top, chunk", [(13, 5, 4), (45, 7, 19)])
@pytest.mark.parametrize("nat", [Field64Native, Field128Native], ids=lambda f: f.__name__)
def test_fused_range_check_prover_equals_the_wire_matrix_path(nat, length, top, chunk, monkeypatch, ifma) -> None:  # type: ignore[no-untyped-def]
    """Proofs from the fused kernel (any thread count, scalar or IFMA lanes, ragged last call and
    slot groups) equal those built from the wire matrix."""
    from twinmpc.crypto import field_native
    from twinmpc.mpc.prio3.circuits import SumVec
    from twinmpc.mpc.prio3.flp import FlpBBCGGI19, Valid

    monkeypatch.setattr(field_native, "PMUL_THREADS_MIN", 0)
    flp = FlpBBCGGI19(SumVec(nat, length, top, chunk))  # the last call is partial
    rng = np.random.default_rng(2)
    rows = 3
    meas = np.stack([flp.encode([int(v) for v in rng.integers(0, top + 1, size=length)]) for _ in range(rows)])
    rand = lambda k: nat.from_ints([int(x) for x in rng.integers(0, 2**62, size=rows * k)]).reshape(rows, k)
    prove_rand, joint_rand = rand(flp.PROVE_RAND_LEN), rand(flp.JOINT_RAND_LEN)
    fused = {}
    for threads in ("1", "2", "3"):
        monkeypatch.setenv(field_native.THREADS_ENV, threads)
        fused[threads] = flp.prove_rows(nat, meas, prove_rand, joint_rand)
    monkeypatch.setattr(type(flp.valid), "prove_gadget_rows", Valid.prove_gadget_rows)
    assert np.array_equal(fused["1"], flp.prove_rows(nat, meas, prove_rand, joint_rand))
    assert np.array_equal(fused["2"], fused["1"]) and np.array_equal(fused["3"], fused["1"])


@pytest.mark.parametrize("ref, nat", PAIRS, ids=lambda f: f.__name__)
def test_canonical_check_and_views_match_the_reference(ref, nat) -> None:  # type: ignore[no-untyped-def]
    """all_canonical (compiled count of elements >= p) and view_vec agree with decode_vec on edge
    encodings; a view is read-only and shares the received bytes."""
    size, p = ref.ENCODED_SIZE, ref.MODULUS
    over = [p, p + 1, 2 ** (8 * size) - 1] + ([p + 2**64 - 1, (p >> 64) + 1 << 64] if size == 16 else [])
    good = [0, 1, p - 1, p - 2, 2**63] + ([(p >> 64) << 64, p - 2**64] if size == 16 else [])
    for values in [good, good + [over[0]], [over[-1]] + good] + [[v] for v in over]:
        data = b"".join(v.to_bytes(size, "little") for v in values)
        vec = np.frombuffer(data, dtype=ref.DTYPE)
        want = all(v < p for v in values)
        assert nat.all_canonical(vec) is want and ref.all_canonical(vec) is want, values
        if want:
            view = nat.view_vec(data)
            assert not view.flags.writeable and np.array_equal(view, ref.decode_vec(data))
        else:
            with pytest.raises(DecodeError):
                nat.view_vec(data)


@pytest.mark.parametrize("ref, nat", PAIRS, ids=lambda f: f.__name__)
def test_matrix_vector_sums_on_any_thread_count(ref, nat, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The row-split matrix times vector (truncate of long shares) equals the reference, small
    (one-word) and full factors alike."""
    from twinmpc.crypto import field_native

    monkeypatch.setattr(field_native, "PMUL_THREADS_MIN", 0)
    rng = np.random.default_rng(11)
    a = ref.from_ints([ref.MODULUS - 1] * 8 + [int(v) for v in rng.integers(0, 2**62, size=37 * 8 - 8)]).reshape(37, 8)
    for weights in ([1, 2, 4, 8, 16, 32, 64, 128], [ref.MODULUS - 1, 3, 2**63, 5, 0, 1, ref.MODULUS - 2, 7]):
        w = ref.from_ints(weights)
        want = ref.mul_sum(a, w)
        for threads in ("1", "2", "3"):
            monkeypatch.setenv(field_native.THREADS_ENV, threads)
            assert np.array_equal(nat.mul_sum(a, w), want), threads
