"""Additive sharing (crypto.sharing): reconstruction, wraparound, binding of the
helper expansions, and uniformity of any K-1 shares whatever the input."""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import prg, ring, sharing

TOP = ring.MODULUS - 1
BINDER = b"\x00\x04ctx!" + bytes(range(16))


def counter_rand(label: bytes):
    """Deterministic `rand` seam: SHA-256 of (label, call counter)."""
    counter = itertools.count()

    def rand(n: int) -> bytes:
        out = hashlib.sha256(label + next(counter).to_bytes(8, "big")).digest()
        return (out * (n // 32 + 1))[:n]

    return rand


def reconstruct(leader: np.ndarray, seeds: list[bytes], binder: bytes) -> np.ndarray:
    helpers = [sharing.expand_helper_share(s, binder, j, leader.size) for j, s in enumerate(seeds, start=1)]
    return sharing.combine([leader, *helpers])


@given(
    k=st.sampled_from([2, 3, 5]),
    values=st.lists(st.integers(min_value=0, max_value=TOP), min_size=1, max_size=64),
    binder=st.binary(max_size=40),
)
@settings(max_examples=80)
def test_unshard_of_shard_is_identity(k: int, values: list[int], binder: bytes) -> None:
    x = ring.from_ints(values)
    leader, seeds = sharing.split(x, k, binder)
    assert len(seeds) == k - 1 and all(len(s) == prg.SEED_SIZE for s in seeds)
    assert leader.dtype == ring.DTYPE and leader.shape == x.shape
    assert reconstruct(leader, seeds, binder).tolist() == values


def test_split_does_not_modify_input() -> None:
    x = ring.from_ints([1, 2, 3])
    sharing.split(x, 3, BINDER)
    assert x.tolist() == [1, 2, 3]


def test_wraparound_extremes() -> None:
    x = ring.from_ints([TOP, 0, 1 << 63, TOP])
    leader, seeds = sharing.split(x, 3, BINDER, rand=counter_rand(b"wrap"))
    assert reconstruct(leader, seeds, BINDER).tolist() == [TOP, 0, 1 << 63, TOP]


def test_rand_seam_is_deterministic_and_used() -> None:
    x = ring.from_ints([5, 6])
    a = sharing.split(x, 3, BINDER, rand=counter_rand(b"r"))
    b = sharing.split(x, 3, BINDER, rand=counter_rand(b"r"))
    c = sharing.split(x, 3, BINDER, rand=counter_rand(b"s"))
    assert a[0].tolist() == b[0].tolist() and a[1] == b[1]
    assert a[1] != c[1] and a[0].tolist() != c[0].tolist()


def test_helper_expansion_is_bound_to_index_and_binder() -> None:
    seed = bytes(32)
    one = sharing.expand_helper_share(seed, BINDER, 1, 8)
    assert one.tolist() != sharing.expand_helper_share(seed, BINDER, 2, 8).tolist()
    assert one.tolist() != sharing.expand_helper_share(seed, BINDER + b"x", 1, 8).tolist()
    assert one.tolist() == prg.expand_ring(seed, sharing.SHARE_DST, BINDER + b"\x01", 8).tolist()


def test_wrong_binder_does_not_reconstruct() -> None:
    x = ring.from_ints([7] * 4)
    leader, seeds = sharing.split(x, 2, BINDER)
    assert reconstruct(leader, seeds, BINDER + b"?").tolist() != [7] * 4


@pytest.mark.parametrize("k", [0, 1])
def test_fewer_than_two_shares_rejected(k: int) -> None:
    with pytest.raises(ValueError):
        sharing.split(ring.zeros(1), k, BINDER)


@pytest.mark.parametrize("index", [0, 256])
def test_helper_index_range(index: int) -> None:
    with pytest.raises(ValueError):
        sharing.helper_binder(BINDER, index)


# --- uniformity of any K-1 shares ---------------------------------------------
N = 8192  # elements per statistical sample: 65536 bytes, 256 expected per byte value
INPUTS = {
    "zeros": ring.zeros(N),
    "all-ones": np.full(N, TOP, dtype=ring.DTYPE),
    "ramp": np.arange(N, dtype=ring.DTYPE) * np.uint64(0x9E3779B97F4A7C15),
}


def chi2_threshold(df: int, z: float = 5.0) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df) at a normal z-score (p ~ 3e-7)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def assert_uniform(share: np.ndarray, what: str) -> None:
    data = np.frombuffer(ring.encode(share), dtype=np.uint8)
    counts = np.bincount(data, minlength=256)
    expected = data.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < chi2_threshold(255), f"{what}: byte chi-square {chi2:.1f}"
    bits = np.unpackbits(data.reshape(-1, 8)[:, ::-1], axis=1)  # row = one element, MSB first
    ones = bits.sum(axis=0)
    z = (ones - N / 2) / (math.sqrt(N) / 2)
    assert float(np.max(np.abs(z))) < 5.0, f"{what}: bit imbalance z={float(np.max(np.abs(z))):.1f}"


def shares_of(x: np.ndarray, k: int, label: bytes) -> list[np.ndarray]:
    leader, seeds = sharing.split(x, k, BINDER, rand=counter_rand(label))
    return [leader] + [sharing.expand_helper_share(s, BINDER, j, N) for j, s in enumerate(seeds, start=1)]


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_any_k_minus_1_shares_are_uniform(k: int, name: str) -> None:
    shares = shares_of(INPUTS[name], k, b"uniform-" + name.encode())
    for subset in itertools.combinations(range(k), k - 1):
        for j in subset:
            assert_uniform(shares[j], f"{name} K={k} share {j}")
        if len(subset) > 1:  # a linear combination of the coalition's shares must not show x either
            assert_uniform(sharing.combine([shares[j] for j in subset]), f"{name} K={k} sum of {subset}")


def test_uniformity_check_can_fail() -> None:
    # The statistic must flag a share that is not masked, or only partly masked.
    with pytest.raises(AssertionError):
        assert_uniform(np.arange(N, dtype=ring.DTYPE), "unmasked counter")
    half_masked = shares_of(INPUTS["zeros"], 2, b"u")[1] & np.uint64(0xFFFFFFFF)
    with pytest.raises(AssertionError):
        assert_uniform(half_masked, "half masked")


def test_leader_shares_of_different_inputs_with_same_seeds_differ_by_the_input() -> None:
    # Same seeds: the helper view is identical whatever x is; the leader share shifts by x.
    a = shares_of(INPUTS["zeros"], 2, b"same")
    b = shares_of(INPUTS["ramp"], 2, b"same")
    assert a[1].tolist() == b[1].tolist()
    assert ring.sub(b[0], a[0]).tolist() == INPUTS["ramp"].tolist()
