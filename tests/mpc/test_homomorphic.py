"""mpc.homomorphic: client/aggregator/collector flows for Paillier and CKKS, rotation, noise, state."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import ckks, dp_noise, paillier, ring
from twinmpc.mpc import homomorphic as he
from twinmpc.mpc.errors import DecodeError, InvalidMeasurement, InvalidReport, InvalidTask
from twinmpc.mpc.measurements import Count, FixedPointVec, Histogram, Mean, Sum, SumVec

TEST_BITS = 512
P3 = he.HomomorphicParams("paillier", 3, 1000, 50)
C = he.HomomorphicParams("ckks", 5000, 100.0, 1000)


@pytest.fixture(scope="module")
def old_key():
    return paillier.generate_keypair(insecure_test_bits=TEST_BITS)


@pytest.fixture(scope="module")
def new_key():
    return paillier.generate_keypair(insecure_test_bits=TEST_BITS)


@pytest.fixture(scope="module")
def ckks_key() -> ckks.CkksSecretContext:
    return ckks.generate_context()


def _paillier_acc(pk, reports: list[list[int]]) -> he.HomomorphicAccumulator:
    acc = he.HomomorphicAccumulator(P3, [pk])
    for r in reports:
        acc.add(he.encrypt_report(P3, pk, r))
    return acc


# --- parameters ----------------------------------------------------------------------


def test_params_from_task() -> None:
    p = he.HomomorphicParams.from_task({"mode": "paillier", "length": 3, "max_abs": 1000, "max_reports": 50})
    assert p == P3
    assert p.max_abs_sum == 50_000


@pytest.mark.parametrize(
    "doc, match",
    [
        ({"mode": "paillier", "length": 3, "max_abs": 1, "max_reports": 5, "x": 1}, "unknown"),
        ({"mode": "paillier", "length": 3, "max_abs": 1}, "missing"),
        ({"mode": "shares", "length": 3, "max_abs": 1, "max_reports": 5}, "mode"),
        ({"mode": "paillier", "length": 0, "max_abs": 1, "max_reports": 5}, "length"),
        ({"mode": "paillier", "length": 3, "max_abs": 1.5, "max_reports": 5}, "max_abs"),
        ({"mode": "ckks", "length": 3, "max_abs": float("inf"), "max_reports": 5}, "max_abs"),
        ({"mode": "ckks", "length": 3, "max_abs": 1.0, "max_reports": 0}, "max_reports"),
    ],
)
def test_params_rejections(doc, match) -> None:
    with pytest.raises(InvalidTask, match=match):
        he.HomomorphicParams.from_task(doc)


@pytest.mark.parametrize(
    "mode, measurement, expected",
    [
        ("paillier", Count(), ("paillier", 1, 1)),
        ("paillier", Sum(8), ("paillier", 1, 255)),
        ("paillier", Mean(4), ("paillier", 1, 15)),
        ("paillier", Histogram(5), ("paillier", 5, 1)),
        ("paillier", SumVec(3, 10), ("paillier", 3, 1023)),
        ("paillier", FixedPointVec(4, 16, 1.5), ("paillier", 4, 98304)),
        ("ckks", FixedPointVec(4, 16, 1.5), ("ckks", 4, 1.5)),
    ],
)
def test_params_for_measurement(mode, measurement, expected) -> None:
    p = he.HomomorphicParams.for_measurement(mode, measurement, 100)
    assert (p.mode, p.length, p.max_abs, p.max_reports) == (*expected, 100)


def test_params_for_measurement_rejections() -> None:
    with pytest.raises(InvalidTask, match="fixedpointvec"):
        he.HomomorphicParams.for_measurement("ckks", Count(), 10)


def test_histogram_through_paillier(old_key) -> None:
    pk, sk = old_key
    hist = Histogram(4)
    params = he.HomomorphicParams.for_measurement("paillier", hist, 10)
    acc = he.HomomorphicAccumulator(params, [pk])
    for bucket in (0, 3, 3, 1):
        acc.add(he.encrypt_report(params, pk, ring.to_signed(hist.encode(bucket))))
    assert he.decrypt_aggregate(params, sk, acc.to_bytes(), 4) == [1, 1, 0, 2]


def test_check_key_rejects_wrong_type_and_small_range(old_key, ckks_key) -> None:
    pk, _ = old_key
    with pytest.raises(TypeError):
        P3.check_key(ckks_key.public)
    with pytest.raises(TypeError):
        C.check_key(pk)
    huge = he.HomomorphicParams("paillier", 1, 2**300, 2**300)
    with pytest.raises(InvalidTask, match="wider than the Paillier key"):
        huge.check_key(pk)
    with pytest.raises(InvalidTask, match="CKKS decryptable"):
        he.HomomorphicParams("ckks", 1, 2.0**50, 2**20).check_key(ckks_key.public)


def test_public_key_from_bytes(old_key, ckks_key) -> None:
    pk, _ = old_key
    assert he.public_key_from_bytes("paillier", pk.to_json(), insecure_test_bits=TEST_BITS) == pk
    assert he.public_key_from_bytes("ckks", ckks_key.public.to_bytes()).key_id == ckks_key.key_id
    with pytest.raises(DecodeError):
        he.public_key_from_bytes("paillier", pk.to_json())  # 512-bit key without the test flag
    with pytest.raises(InvalidTask):
        he.public_key_from_bytes("shares", b"")  # type: ignore[arg-type]


# --- Paillier flow -----------------------------------------------------------------


def test_paillier_end_to_end_with_noise(old_key) -> None:
    pk, sk = old_key
    reports = [[1, -2, 3], [400, 5, -600], [7, 8, 1000]]
    acc = _paillier_acc(pk, reports)
    assert acc.count == 3
    noise = np.array([5, -9, 0], dtype=np.int64)
    he.add_noise_homomorphically(acc, noise)
    result = he.decrypt_aggregate(P3, sk, acc.to_bytes(), 3)
    assert result == [408 + 5, 11 - 9, 403]


def test_paillier_noise_from_the_dp_sampler(old_key) -> None:
    pk, sk = old_key
    acc = _paillier_acc(pk, [[1, 2, 3]])
    noise = dp_noise.discrete_gaussian_batch(100, 3, rng=np.random.default_rng(1))
    he.add_noise_homomorphically(acc, noise)
    assert he.decrypt_aggregate(P3, sk, acc.to_bytes(), 1) == [1 + int(noise[0]), 2 + int(noise[1]), 3 + int(noise[2])]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.lists(st.integers(-1000, 1000), min_size=3, max_size=3), min_size=1, max_size=6))
def test_paillier_sum_property(old_key, reports) -> None:
    pk, sk = old_key
    acc = _paillier_acc(pk, reports)
    assert he.decrypt_aggregate(P3, sk, acc.to_bytes(), len(reports)) == [int(v) for v in np.sum(reports, axis=0)]


def test_key_rotation_sums_both_keys(old_key, new_key) -> None:
    (old_pk, old_sk), (new_pk, new_sk) = old_key, new_key
    acc = he.HomomorphicAccumulator(P3, [old_pk, new_pk])
    assert acc.current_key_id == new_pk.key_id
    acc.add(he.encrypt_report(P3, old_pk, [1, 1, 1]))
    acc.add(he.encrypt_report(P3, new_pk, [10, 20, 30]))
    acc.add(he.encrypt_report(P3, old_pk, [-2, 0, 2]))
    assert acc.counts_by_key == {old_pk.key_id: 2, new_pk.key_id: 1}
    he.add_noise_homomorphically(acc, np.array([1, 1, 1]))
    data = acc.to_bytes()
    assert he.decrypt_aggregate(P3, [old_sk, new_sk], data, 3) == [10, 22, 34]
    with pytest.raises(InvalidReport, match="not accepted"):
        he.decrypt_aggregate(P3, [new_sk], data, 3)  # the retired key is needed for its group


def test_report_under_unaccepted_key_is_rejected(old_key, new_key) -> None:
    acc = he.HomomorphicAccumulator(P3, [new_key[0]])
    with pytest.raises(InvalidReport, match="not accepted"):
        acc.add(he.encrypt_report(P3, old_key[0], [1, 2, 3]))
    assert acc.count == 0


def test_state_round_trip_and_merge(old_key) -> None:
    pk, sk = old_key
    a = _paillier_acc(pk, [[1, 2, 3], [4, 5, 6]])
    b = _paillier_acc(pk, [[-10, 0, 10]])
    restored = he.HomomorphicAccumulator.from_bytes(P3, [pk], a.to_bytes())
    assert restored.count == 2 and restored.to_bytes() == a.to_bytes()
    restored.merge(b)
    assert he.decrypt_aggregate(P3, sk, restored.to_bytes(), 3) == [-5, 7, 19]


def test_state_layout_annotated(old_key) -> None:
    pk, _ = old_key
    data = _paillier_acc(pk, [[1, 2, 3]]).to_bytes()
    assert data[:9].hex() == "01" "01" "00" "00000003" "0001"  # version, paillier, not noised, length 3, 1 group
    assert data[9:17] == pk.key_id_bytes
    assert data[17:25].hex() == "0000000000000001"  # count
    (plen,) = struct.unpack(">I", data[25:29])
    assert plen == 13 + 1 * pk.ciphertext_size and len(data) == 29 + plen  # 3 entries packed in one ciphertext
    assert he.HomomorphicAccumulator(P3, [pk]).to_bytes().hex() == "01010000000003" "0000"


def test_count_mismatch_is_rejected(old_key) -> None:
    pk, sk = old_key
    data = _paillier_acc(pk, [[1, 2, 3]]).to_bytes()
    with pytest.raises(InvalidReport, match="expected 2"):
        he.decrypt_aggregate(P3, sk, data, 2)


def test_max_reports_is_enforced(old_key) -> None:
    pk, _ = old_key
    small = he.HomomorphicParams("paillier", 1, 10, 2)
    acc = he.HomomorphicAccumulator(small, [pk])
    report = he.encrypt_report(small, pk, 1)
    acc.add(report)
    acc.add(report)
    with pytest.raises(InvalidReport, match="max_reports"):
        acc.add(report)
    other = he.HomomorphicAccumulator(small, [pk])
    other.add(report)
    with pytest.raises(ValueError, match="exceed max_reports"):
        acc.merge(other)


def test_noised_accumulator_is_frozen(old_key) -> None:
    pk, _ = old_key
    acc = _paillier_acc(pk, [[1, 2, 3]])
    other = _paillier_acc(pk, [[1, 2, 3]])
    he.add_noise_homomorphically(acc, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="already noised"):
        acc.add(he.encrypt_report(P3, pk, [1, 2, 3]))
    with pytest.raises(ValueError, match="already added"):
        he.add_noise_homomorphically(acc, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="noised"):
        other.merge(acc)
    assert he.HomomorphicAccumulator.from_bytes(P3, [pk], acc.to_bytes()).noised


@pytest.mark.parametrize(
    "noise, kwargs, match",
    [
        (np.zeros(2, dtype=np.int64), {}, "length 3"),
        (np.zeros(3), {}, "integer"),
        (np.zeros(3, dtype=np.int64), {"step": 0.5}, "step"),
        (np.array([1.5, 0, 0], dtype=object), {}, "integer"),
    ],
)
def test_noise_rejections(old_key, noise, kwargs, match) -> None:
    pk, _ = old_key
    acc = _paillier_acc(pk, [[1, 2, 3]])
    with pytest.raises(ValueError, match=match):
        he.add_noise_homomorphically(acc, noise, **kwargs)
    assert not acc.noised


def test_noise_overflow_is_rejected(old_key) -> None:
    pk, sk = old_key
    acc = _paillier_acc(pk, [[1, 2, 3]])
    assert P3.slot_bits == 18  # bitlen(50 * 1000) + 2
    room = 2**17 - 1 - P3.max_abs_sum
    with pytest.raises(ValueError, match="overflow"):
        he.add_noise_homomorphically(acc, np.array([room + 1, 0, 0], dtype=object))
    he.add_noise_homomorphically(acc, np.array([room, 0, -room], dtype=object))  # big exact ints are fine
    assert he.decrypt_aggregate(P3, sk, acc.to_bytes(), 1) == [1 + room, 2, 3 - room]


@pytest.mark.parametrize(
    "measurement, match",
    [
        ([1.5, 2, 3], "integers"),
        ([1, 2], "3 entries"),
        ([1, 2, 1001], "max_abs"),
        ([[1, 2, 3]], "3 entries"),
        (np.array([True, 2, 3], dtype=object), "integers"),
        (["a", "b", "c"], "integers"),
    ],
)
def test_paillier_measurement_rejections(old_key, measurement, match) -> None:
    with pytest.raises(InvalidMeasurement, match=match):
        he.encrypt_report(P3, old_key[0], measurement)


def test_validate_ciphertext(old_key) -> None:
    pk, _ = old_key
    good = he.encrypt_report(P3, pk, [1, 2, 3])
    he.validate_ciphertext(P3, pk, good)
    with pytest.raises(DecodeError):
        he.validate_ciphertext(P3, pk, good[:-1])


def test_paillier_packing_sizes(old_key) -> None:
    pk, sk = old_key
    params = he.HomomorphicParams("paillier", 100, 1000, 50)
    assert params.paillier_slots(pk) == 28  # floor((512 - 2) / 18)
    assert params.paillier_ciphertexts(pk) == 4
    values = list(range(-50, 50))
    report = he.encrypt_report(params, pk, values)
    assert len(report) == 13 + 4 * pk.ciphertext_size
    acc = he.HomomorphicAccumulator(params, [pk])
    acc.add(report)
    acc.add(he.encrypt_report(params, pk, [-v for v in values[::-1]]))
    assert he.decrypt_aggregate(params, sk, acc.to_bytes(), 2) == [a - b for a, b in zip(values, values[::-1])]


def test_paillier_randomness_seam_is_deterministic(old_key) -> None:
    pk, _ = old_key
    rand = lambda n: (12345).to_bytes(n, "big")  # noqa: E731
    assert he.encrypt_report(P3, pk, [1, 2, 3], rand=rand) == he.encrypt_report(P3, pk, [1, 2, 3], rand=rand)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d[:5], "too short"),
        (lambda d: d + b"\x00", "trailing"),
        (lambda d: d[:1] + b"\x02" + d[2:], "mode"),
        (lambda d: d[:2] + b"\x07" + d[3:], "flag"),
        (lambda d: d[:3] + struct.pack(">I", 4) + d[7:], "length"),
        (lambda d: d[:7] + struct.pack(">H", 2) + d[9:], "truncated"),
        (lambda d: d[:-1], "truncated payload"),
        (lambda d: d[:17] + struct.pack(">Q", 10**6) + d[25:], "max_reports"),
    ],
)
def test_state_decode_rejections(old_key, mutate, match) -> None:
    pk, _ = old_key
    data = _paillier_acc(pk, [[1, 2, 3]]).to_bytes()
    with pytest.raises(DecodeError, match=match):
        he.HomomorphicAccumulator.from_bytes(P3, [pk], mutate(data))


def test_state_decode_rejects_duplicate_group(old_key) -> None:
    pk, _ = old_key
    data = _paillier_acc(pk, [[1, 2, 3]]).to_bytes()
    doubled = data[:7] + struct.pack(">H", 2) + data[9:] + data[9:]
    with pytest.raises(DecodeError, match="duplicate"):
        he.HomomorphicAccumulator.from_bytes(P3, [pk], doubled)


def test_accumulator_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        he.HomomorphicAccumulator(P3, [])


def test_merge_rejects_other_params(old_key) -> None:
    pk, _ = old_key
    other = he.HomomorphicAccumulator(he.HomomorphicParams("paillier", 3, 1000, 51), [pk])
    with pytest.raises(ValueError, match="different parameters"):
        _paillier_acc(pk, []).merge(other)


# --- CKKS flow ----------------------------------------------------------------------


def test_ckks_end_to_end_with_noise(ckks_key) -> None:
    pub = he.public_key_from_bytes("ckks", ckks_key.public.to_bytes())
    xs = np.random.default_rng(5).uniform(-100, 100, (6, C.length))
    acc = he.HomomorphicAccumulator(C, [pub])
    for x in xs:
        acc.add(he.encrypt_report(C, pub, x))
    state = acc.to_bytes()
    acc = he.HomomorphicAccumulator.from_bytes(C, [pub], state)
    noise = dp_noise.discrete_gaussian_batch(16, C.length, rng=np.random.default_rng(2))
    he.add_noise_homomorphically(acc, noise, step=0.25)
    out = he.decrypt_aggregate(C, ckks_key, acc.to_bytes(), 6)
    expected = xs.sum(axis=0) + noise * 0.25
    assert isinstance(out, np.ndarray) and out.shape == (C.length,)
    assert np.max(np.abs(out - expected)) <= 7 * ckks.SUM_ERROR_PER_SUMMAND  # 6 reports + 1 noise ciphertext


@pytest.mark.parametrize(
    "measurement, match",
    [
        (np.full(C.length, np.nan), "finite"),
        (np.full(C.length, 101.0), "max_abs"),
        (np.ones(10), "5000 entries"),
        (["x"] * 5000, "real numbers"),
    ],
)
def test_ckks_measurement_rejections(ckks_key, measurement, match) -> None:
    with pytest.raises(InvalidMeasurement, match=match):
        he.encrypt_report(C, ckks_key.public, measurement)


def test_ckks_noise_overflow_is_rejected(ckks_key) -> None:
    acc = he.HomomorphicAccumulator(C, [ckks_key.public])
    with pytest.raises(ValueError, match="overflow"):
        he.add_noise_homomorphically(acc, np.full(C.length, 2**62, dtype=np.int64), step=1.0)


def test_ckks_report_from_other_context_rejected(ckks_key) -> None:
    other = ckks.generate_context()
    acc = he.HomomorphicAccumulator(C, [ckks_key.public])
    with pytest.raises(InvalidReport, match="not accepted"):
        acc.add(he.encrypt_report(C, other.public, np.zeros(C.length)))
