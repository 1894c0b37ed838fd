"""The FedAvg protocol: clipping and weighting, fixed-point encoding, the server step.

Training on the simulated city, with the accuracy claims, is in
tests/services/twin/test_fedavg_training.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from twinmpc.crypto import ring, sharing
from twinmpc.mpc.fedavg import FedAvgConfig, clip_update, decode_aggregate, encode_update, server_update


def aggregator_totals(vectors, num_aggregators: int = 2) -> list[np.ndarray]:
    """Each update is split into additive shares; each aggregator sums only its own shares."""
    length = vectors[0].size
    totals = [ring.zeros(length) for _ in range(num_aggregators)]
    for i, v in enumerate(vectors):
        binder = i.to_bytes(16, "big")
        leader, seeds = sharing.split(v, num_aggregators, binder)
        totals[0] = ring.add(totals[0], leader)
        for j, seed in enumerate(seeds, start=1):
            totals[j] = ring.add(totals[j], sharing.expand_helper_share(seed, binder, j, length))
    return totals


def shared_sum(vectors) -> np.ndarray:
    """The collector combines the two aggregators' totals."""
    return sharing.combine(aggregator_totals(vectors))


def plain_sum(vectors) -> np.ndarray:
    return np.sum(np.stack(vectors), axis=0, dtype=ring.DTYPE)


def test_encode_decode_round_trip() -> None:
    cfg = FedAvgConfig()
    rng = np.random.default_rng(1)
    deltas = [rng.normal(size=8) * 0.1 for _ in range(5)]
    weights = [0.2, 0.4, 0.6, 0.8, 1.0]
    total = plain_sum([encode_update(d, w, cfg) for d, w in zip(deltas, weights)])
    avg, weight_sum = decode_aggregate(total, cfg)
    expected = sum(w * d for d, w in zip(deltas, weights)) / sum(weights)
    assert weight_sum == pytest.approx(3.0, abs=5 * 2.0**-cfg.frac_bits)
    assert np.allclose(avg, expected, atol=10 * 2.0**-cfg.frac_bits)


def test_encode_update_matches_the_task_measurement() -> None:
    cfg = FedAvgConfig()
    delta = np.linspace(-0.5, 0.5, 8)
    m = cfg.measurement(7)
    assert m.length == 9 and m.clip == cfg.entry_clip and m.frac_bits == cfg.frac_bits
    assert np.array_equal(m.encode(np.append(0.5 * delta, 0.5)), encode_update(delta, 0.5, cfg))


def test_encode_update_rejections() -> None:
    cfg = FedAvgConfig(clip_norm=1.0)
    with pytest.raises(ValueError, match="clip"):
        encode_update(np.full(8, 1.0), 0.5, cfg)
    with pytest.raises(ValueError, match="weight"):
        encode_update(np.zeros(8), 0.0, cfg)
    with pytest.raises(ValueError, match="weight"):
        encode_update(np.zeros(8), 1.5, cfg)


def test_decode_nonpositive_weight_sum_leaves_model() -> None:
    cfg = FedAvgConfig()
    total = ring.from_ints(np.array([5, 5, -(2**cfg.frac_bits)], dtype=np.int64))
    avg, weight_sum = decode_aggregate(total, cfg)
    assert weight_sum == -1.0 and np.array_equal(avg, np.zeros(2))


@pytest.mark.parametrize(
    "kwargs",
    [{"clip_norm": 0.0}, {"clip_norm": float("inf")}, {"weight_cap": 0}, {"server_lr": 0.0}, {"frac_bits": 0}],
)
def test_config_rejections(kwargs) -> None:
    with pytest.raises(ValueError):
        FedAvgConfig(**kwargs)


def test_each_aggregator_total_alone_is_not_the_sum() -> None:
    updates = [encode_update(np.full(8, 0.1), 1.0, FedAvgConfig()) for _ in range(3)]
    totals = aggregator_totals(updates, num_aggregators=3)
    assert np.array_equal(sharing.combine(totals), plain_sum(updates))
    assert all(not np.array_equal(t, plain_sum(updates)) for t in totals)


def test_clip_update_clips_and_caps_weight() -> None:
    cfg = FedAvgConfig(clip_norm=0.05, weight_cap=100)
    delta, weight, clipped = clip_update(np.full(8, 0.1), 250, cfg)
    assert clipped and np.linalg.norm(delta) == pytest.approx(0.05) and weight == 1.0
    small, w_small, was_clipped = clip_update(np.full(8, 0.01), 30, cfg)
    assert not was_clipped and np.array_equal(small, np.full(8, 0.01)) and w_small == 0.3


def test_server_update_moves_the_model_by_the_weighted_average() -> None:
    cfg = FedAvgConfig(server_lr=0.5)
    updates = [encode_update(np.full(3, 0.2), 1.0, cfg), encode_update(np.full(3, -0.1), 0.5, cfg)]
    weights, weight_sum = server_update(np.ones(3), updates, shared_sum, cfg)
    assert weight_sum == pytest.approx(1.5, abs=1e-6)
    assert np.allclose(weights, 1 + 0.5 * (0.2 - 0.05) / 1.5, atol=1e-6)


def test_server_update_rejections() -> None:
    cfg = FedAvgConfig(clip_norm=2.0**21, frac_bits=40)  # clip * 2^40 = 2^61: at most 3 summands
    four = [encode_update(np.zeros(8), 1.0, cfg)] * 4
    with pytest.raises(ValueError, match="fixed-point range"):
        server_update(np.zeros(8), four, plain_sum, cfg)
    ok = [encode_update(np.zeros(8), 1.0, FedAvgConfig())] * 2
    with pytest.raises(ValueError, match="secure_sum returned shape"):
        server_update(np.zeros(8), ok, lambda v: plain_sum(v)[:-1], FedAvgConfig())
    with pytest.raises(ValueError, match="dp_noise"):
        server_update(np.zeros(8), ok, plain_sum, FedAvgConfig(), dp_noise=lambda n: np.zeros(n))
    with pytest.raises(ValueError, match="at least one"):
        server_update(np.zeros(8), [], plain_sum, FedAvgConfig())
