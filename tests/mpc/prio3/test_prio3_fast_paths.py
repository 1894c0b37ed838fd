"""Vectorised fast paths of mpc.prio3 against their general twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto.field import Field64, Field64Small, Field128
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.field_native import Field64Native, Field128Native, native_built
from twinmpc.mpc.errors import InvalidMeasurement
from twinmpc.mpc.prio3.circuits import SumVec


@pytest.mark.parametrize("field", [Field64, Field64Small, Field128, Field128Limbs], ids=lambda f: f.__name__)
def test_sumvec_machine_int_encoding_matches_the_general_one(field) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=30, deadline=None)
    @given(st.sampled_from([1, 2, 5, 255, 256, 1000, 2**32 - 1]), st.data())
    def check(max_measurement, data):  # type: ignore[no-untyped-def]
        length = data.draw(st.integers(1, 12))
        circuit = SumVec(field, length, max_measurement, 3)
        vals = data.draw(st.lists(st.integers(0, max_measurement), min_size=length, max_size=length))
        general = circuit.encode(np.array(vals, dtype=object))  # object dtype: the per-entry path
        for fast_input in (vals, np.array(vals, dtype=np.int64), np.array(vals, dtype=np.uint64)):
            assert field.to_ints(circuit.encode(fast_input)) == field.to_ints(general)

    check()


def test_sumvec_machine_int_encoding_of_bools() -> None:
    circuit = SumVec(Field128, 4, 1, 2)
    assert Field128.to_ints(circuit.encode(np.array([True, False, True, True]))) == [1, 0, 1, 1]


@pytest.mark.parametrize(
    "bad",
    [
        np.array([0, 256, 3], dtype=np.int64),  # above max
        np.array([0, -1, 3], dtype=np.int64),  # negative
        np.array([0, 2**64 - 1, 3], dtype=np.uint64),  # wraps negative in int64: still rejected
        np.array([0.0, 1.0, 3.0]),  # floats take the general path and are refused there
        [0, 1.5, 3],
    ],
    ids=["above-max", "negative", "huge-uint64", "float-array", "float-entry"],
)
def test_sumvec_encoding_rejects_out_of_range_and_non_integers(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidMeasurement):
        SumVec(Field128, 3, 255, 2).encode(bad)


@pytest.mark.parametrize("length, chunk", [(30, 4), (200, 16)])
def test_prover_gives_the_same_proof_on_either_backend(length, chunk, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The prover's coset transforms may move to field.LARGE; the proof must not change."""
    from twinmpc.mpc.prio3 import flp as flp_module
    from twinmpc.mpc.prio3.circuits import Histogram
    from twinmpc.mpc.prio3.flp import FlpBBCGGI19

    flp = FlpBBCGGI19(Histogram(Field128, length, chunk))
    rng = np.random.default_rng(length)
    meas = flp.encode(int(rng.integers(length)))
    prove_rand = Field128.from_ints([int(x) for x in rng.integers(0, 2**62, size=flp.PROVE_RAND_LEN)])
    joint_rand = Field128.from_ints([int(x) for x in rng.integers(0, 2**62, size=flp.JOINT_RAND_LEN)])
    monkeypatch.setattr(flp_module, "PROVER_LARGE_BACKEND_MIN", 0)  # always Field128Limbs
    on_limbs = flp.prove(meas, prove_rand, joint_rand)
    monkeypatch.setattr(flp_module, "PROVER_LARGE_BACKEND_MIN", 10**9)  # never
    on_objects = flp.prove(meas, prove_rand, joint_rand)
    assert on_limbs.dtype == on_objects.dtype == object
    assert Field128.to_ints(on_limbs) == Field128.to_ints(on_objects)
    assert flp.decide(flp.query(meas, on_limbs, Field128.from_ints([7] * flp.QUERY_RAND_LEN), joint_rand, 1))


def test_backend_conversions_keep_values_and_shape() -> None:
    p = Field128.MODULUS
    vals = [0, 1, p - 1, 2**64, 2**64 - 1, 2**127, 12345]
    obj = Field128.from_ints(vals * 2).reshape(2, 7)
    limbs = Field128Limbs.from_backend(Field128, obj)
    assert limbs.shape == (2, 7) and limbs.dtype == Field128Limbs.zeros(1).dtype
    assert Field128Limbs.to_ints(limbs) == vals * 2
    back = Field128.from_backend(Field128Limbs, limbs)
    assert back.shape == (2, 7) and Field128.to_ints(back) == vals * 2
    assert Field128Limbs.from_backend(Field128Limbs, limbs) is limbs
    f64 = Field64.from_backend(Field64Small, Field64Small.from_ints([5, Field64.MODULUS - 1]).reshape(1, 2))
    assert f64.shape == (1, 2) and Field64.to_ints(f64) == [5, Field64.MODULUS - 1]


@pytest.mark.parametrize("field", [Field64, Field64Small, Field128, Field128Limbs], ids=lambda f: f.__name__)
@pytest.mark.parametrize("make", ["sumvec", "histogram", "multihot"])
def test_range_check_wire_evals_match_the_weighted_wires(field, make) -> None:  # type: ignore[no-untyped-def]
    """The verifier's shortcut equals the generic sum over the materialised wires (any share values)."""
    from twinmpc.mpc.prio3.circuits import Histogram, MultihotCountVec
    from twinmpc.mpc.prio3.flp import Valid

    circuit = {
        "sumvec": lambda: SumVec(field, 7, 5, 4),
        "histogram": lambda: Histogram(field, 11, 3),
        "multihot": lambda: MultihotCountVec(field, 9, 3, 5),
    }[make]()
    rng = np.random.default_rng(len(make))
    rand = lambda k: field.from_ints([int(x) for x in rng.integers(0, 2**62, size=k)])
    meas, joint_rand = rand(circuit.MEAS_LEN), rand(circuit.JOINT_RAND_LEN)
    weights = [rand(calls) for calls in circuit.GADGET_CALLS]
    for shares in (1, 2, 3):
        fast = circuit.wire_evals(meas, joint_rand, shares, weights)
        generic = Valid.wire_evals(circuit, meas, joint_rand, shares, weights)
        assert [field.to_ints(x) for x in fast] == [field.to_ints(x) for x in generic]


@pytest.mark.skipif(not native_built(), reason="LOUD SKIP: twinmpc.crypto._field_kernel is not built")
@pytest.mark.parametrize("field", [Field64Native, Field128Native], ids=lambda f: f.__name__)
def test_sumvec_bit_encoding_is_the_field_encoding(field) -> None:  # type: ignore[no-untyped-def]
    """encode_bits: the digits of encode as uint8 on native fields; None where encode must decide."""
    rng = np.random.default_rng(4)
    for max_measurement in (1, 5, 255, 2**40 + 3):
        circuit = SumVec(field, 9, max_measurement, 4)
        vals = [int(v) for v in rng.integers(0, max_measurement + 1, size=9)]
        bits = circuit.encode_bits(vals)
        assert bits.dtype == np.uint8 and bits.tolist() == field.to_ints(circuit.encode(vals))
        with pytest.raises(InvalidMeasurement):
            circuit.encode_bits([max_measurement + 1] + vals[1:])
    assert SumVec(Field128Limbs, 3, 5, 2).encode_bits([1, 2, 3]) is None  # numpy path: field vectors
    if field is Field128Native:
        assert SumVec(field, 2, 2**64, 2).encode_bits([1, 2**64]) is None  # beyond machine words


@pytest.mark.skipif(not native_built(), reason="LOUD SKIP: twinmpc.crypto._field_kernel is not built")
@pytest.mark.parametrize("proofs", [1, 3])
def test_sharding_from_digits_gives_the_bytes_of_field_elements(proofs: int) -> None:
    """The fused path shards SumVec from uint8 digits (prover and share kernels read them in place):
    the same shares as from the field encoding; elsewhere digits are refused."""
    from twinmpc.mpc.prio3 import Prio3SumVec, Prio3SumVecWithMultiproof

    vdaf = Prio3SumVecWithMultiproof(2, 40, 9, 6, proofs) if proofs > 1 else Prio3SumVec(3, 40, 9, 6)
    vdaf._fused = True  # on by default from 4096 measurement elements
    rng = np.random.default_rng(proofs)
    meas, nonce, rand = [int(v) for v in rng.integers(0, 10, size=40)], rng.bytes(16), rng.bytes(vdaf.RAND_SIZE)
    bits = vdaf._encode_for_shard(meas)
    assert bits.dtype == np.uint8
    want = vdaf.shard_encoded(b"ctx", vdaf.flp.encode(meas), nonce, rand)
    assert vdaf.shard(b"ctx", meas, nonce, rand) == want == vdaf.shard_encoded(b"ctx", bits, nonce, rand)
    vdaf._fused = False
    with pytest.raises(InvalidMeasurement):
        vdaf.shard_encoded(b"ctx", bits, nonce, rand)
