"""Prio3FixedPointBoundedL2Vec: our known-answer vectors, properties and rejection paths."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tests.paths import REPO, OUR_VECTORS, VDAF_VECTORS  # noqa: F401
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.mpc.errors import InvalidMeasurement, InvalidTask, VerifyError
from twinmpc.mpc.prio3 import Prio3FixedPointBoundedL2Vec, prio3_from_params
from tests.mpc.prio3.test_prio3_vectors import replay_vector
from tests.vectors.make_l2_vectors import all_docs, build_vdaf, render

VEC_DIR = OUR_VECTORS
FILES = sorted(VEC_DIR.glob("Prio3FixedPointBoundedL2Vec_*.json"))
CTX = b"l2 tests"
KEY = bytes(32)


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    return all_docs()


def test_vector_files_present() -> None:
    assert {p.stem for p in FILES} == {
        "Prio3FixedPointBoundedL2Vec_0",
        "Prio3FixedPointBoundedL2Vec_1",
        "Prio3FixedPointBoundedL2Vec_bad_norm",
        "Prio3FixedPointBoundedL2Vec_bad_bit",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_committed_vectors_match_generator(path: Path, generated: dict[str, dict[str, Any]]) -> None:
    """The committed KATs are exactly what the committed generator produces."""
    assert path.read_text() == render(generated[path.stem])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_replay_vectors(path: Path) -> None:
    doc = json.loads(path.read_text())
    vdaf = build_vdaf(doc)
    replay_vector(vdaf, doc, bad="_bad_" in path.stem)


def test_vector_results_are_the_quantised_sums() -> None:
    doc = json.loads((VEC_DIR / "Prio3FixedPointBoundedL2Vec_0.json").read_text())
    scale = 2 ** doc["frac_bits"]
    sums = [Fraction(0)] * doc["length"]
    for r in doc["reports"]:
        for i, x in enumerate(r["measurement"]):
            sums[i] += Fraction(round(Fraction(x) * scale), scale)
    assert doc["agg_result"] == [float(s) for s in sums]


def _flow(vdaf: Prio3FixedPointBoundedL2Vec, enc: np.ndarray | None = None, meas: Any = None) -> list[float]:
    nonce = os.urandom(16)
    rand = os.urandom(vdaf.RAND_SIZE)
    if enc is None:
        pub, inputs = vdaf.shard(CTX, meas, nonce, rand)
    else:
        pub, inputs = vdaf.shard_encoded(CTX, enc, nonce, rand)
    inits = [vdaf.verify_init(KEY, CTX, j, b"", nonce, pub, inputs[j]) for j in range(vdaf.SHARES)]
    msg = vdaf.verifier_shares_to_message(CTX, b"", [v for _, v in inits])
    outs = [vdaf.verify_next(CTX, s, msg) for s, _ in inits]
    return vdaf.unshard(b"", [vdaf.encode_agg_share(o) for o in outs], 1)


@pytest.fixture(scope="module")
def small() -> Prio3FixedPointBoundedL2Vec:
    return Prio3FixedPointBoundedL2Vec(2, 3, 8, 5, 2)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(-256, 255), min_size=3, max_size=3))
def test_in_bound_vectors_accepted_and_summed(small: Prio3FixedPointBoundedL2Vec, qs: list[int]) -> None:
    norm = sum(q * q for q in qs)
    meas = [Fraction(q, 256) for q in qs]
    if norm > 256 * 256:
        with pytest.raises(InvalidMeasurement):
            small.shard(CTX, meas, bytes(16), bytes(small.RAND_SIZE))
        return
    assert _flow(small, meas=meas) == [q / 256 for q in qs]


def test_over_norm_rejected_by_verification(small: Prio3FixedPointBoundedL2Vec) -> None:
    qs = [200, 200, 0]  # norm 80000 > 65536
    with pytest.raises(InvalidMeasurement):
        small.shard(CTX, [Fraction(q, 256) for q in qs], bytes(16), bytes(small.RAND_SIZE))
    # A malicious client lies about the norm (claims the maximum): the proof fails.
    forged = small.valid.encode_fixed(qs, small.valid.max_norm_int)
    with pytest.raises(VerifyError):
        _flow(small, enc=forged)
    # Claiming the true (too large) norm is not even encodable.
    with pytest.raises(InvalidMeasurement):
        small.valid.encode_fixed(qs, sum(q * q for q in qs))


def test_wrong_claimed_norm_rejected(small: Prio3FixedPointBoundedL2Vec) -> None:
    forged = small.valid.encode_fixed([10, 0, 0], 99)  # true norm 100
    with pytest.raises(VerifyError):
        _flow(small, enc=forged)


def test_out_of_range_entry_rejected(small: Prio3FixedPointBoundedL2Vec) -> None:
    with pytest.raises(InvalidMeasurement):
        small.shard(CTX, [1.0, 0, 0], bytes(16), bytes(small.RAND_SIZE))
    with pytest.raises(InvalidMeasurement):
        small.shard(CTX, [-1.5, 0, 0], bytes(16), bytes(small.RAND_SIZE))
    with pytest.raises(InvalidMeasurement):
        small.shard(CTX, [0.999999, 0, 0], bytes(16), bytes(small.RAND_SIZE))  # rounds to 1
    with pytest.raises(InvalidMeasurement):
        small.shard(CTX, [float("nan"), 0, 0], bytes(16), bytes(small.RAND_SIZE))
    with pytest.raises(InvalidMeasurement):
        small.shard(CTX, [0, 0], bytes(16), bytes(small.RAND_SIZE))
    # Malicious: a non-bit digit makes an entry outside [-1, 1) (u = 2*2^8 + ...).
    forged = small.valid.encode_fixed([0, 0, 0], 0).copy()
    forged[small.valid.entry_bits - 1] = small.field.const(2)[0]
    with pytest.raises(VerifyError):
        _flow(small, enc=forged)


def test_honest_boundary_vector_accepted(small: Prio3FixedPointBoundedL2Vec) -> None:
    # Exactly norm 1: (-1, 0, 0) is in [-1, 1)^3 with |x|^2 = 1.
    assert _flow(small, meas=[-1, 0, 0]) == [-1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "params",
    [
        {"length": 0, "frac_bits": 8, "chunk_length": 2, "norm_chunk_length": 2},
        {"length": 3, "frac_bits": 0, "chunk_length": 2, "norm_chunk_length": 2},
        {"length": 3, "frac_bits": 40, "chunk_length": 2, "norm_chunk_length": 2},
        {"length": 3, "frac_bits": 8, "chunk_length": 2, "norm_chunk_length": 2, "max_norm_sq": 0},
        {"length": 3, "frac_bits": 8, "chunk_length": 2, "norm_chunk_length": 2, "max_norm_sq": "1/1000000"},
        {"length": 3, "frac_bits": 8, "chunk_length": 2},
        {"length": 3, "frac_bits": 8, "chunk_length": 2, "norm_chunk_length": 2, "unknown": 1},
    ],
)
def test_constructor_validation(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidTask):
        prio3_from_params("Prio3FixedPointBoundedL2Vec", 2, **params)


def test_factory_and_id() -> None:
    vdaf = prio3_from_params("Prio3FixedPointBoundedL2Vec", 2, length=3, frac_bits=8, chunk_length=5, norm_chunk_length=2)
    assert vdaf.ID == 0xFFFF1000
    assert vdaf.RAND_SIZE == 2 * 2 * 32  # joint randomness is used


def test_circuit_output_is_zero_exactly_for_valid_encodings(small: Prio3FixedPointBoundedL2Vec) -> None:
    """Plain circuit evaluation (num_shares = 1): both outputs vanish on an honest encoding only."""
    valid = small.valid
    f = valid.field
    jr = f.from_ints(range(3, 3 + valid.JOINT_RAND_LEN))
    honest = valid.encode([0.5, -0.25, 0])
    assert f.to_ints(valid.eval(honest, jr, 1)) == [0, 0]
    lying = valid.encode_fixed([128, -64, 0], 5)  # true norm 20480
    assert f.to_ints(valid.eval(lying, jr, 1))[1] != 0
    not_bits = honest.copy()
    not_bits[0] = f.const(2)[0]
    assert f.to_ints(valid.eval(not_bits, jr, 1))[0] != 0
