"""City data, logistic model and FedAvg through real secure sums (additive shares, Paillier).

Headline number (seed 0, 24 nodes, 30 rounds x 8 clients, 2 local epochs): the
FedAvg model aggregated over 2-aggregator additive shares reaches 81.5 % test
accuracy, the centralised baseline 81.3 % (hidden-rule oracle 81.25 %); the
test asserts a margin of 2 percentage points.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from twinmpc.crypto import dp_noise, paillier, ring, sharing
from twinmpc.mpc import homomorphic as he
from twinmpc.mpc.city_data import HIDDEN_BIAS, HIDDEN_WEIGHTS, ClientData, generate_city
from twinmpc.mpc.fedavg import (
    FedAvgConfig,
    client_update,
    decode_aggregate,
    encode_update,
    fedavg_round,
    run_fedavg,
)
from twinmpc.mpc.traffic_model import SgdConfig, accuracy, gradient, log_loss, predict_proba, sgd, train_centralised

MARGIN = 0.02


@pytest.fixture(scope="module")
def city():
    return generate_city(0)


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


# --- city data ---------------------------------------------------------------------


def test_city_is_reproducible_per_seed(city) -> None:
    again = generate_city(0)
    assert all(np.array_equal(a.features, b.features) and np.array_equal(a.labels, b.labels) for a, b in zip(city.clients, again.clients))
    assert np.array_equal(city.test_labels, again.test_labels)
    other = generate_city(1)
    assert not np.array_equal(city.test_features, other.test_features)


def test_city_shapes_and_ranges(city) -> None:
    assert len(city.clients) == 24 and city.num_features == 7
    x, y = city.pooled()
    assert x.shape == (sum(c.num_samples for c in city.clients), 7)
    assert set(np.unique(y)) == {0, 1}
    assert np.all(np.abs(x[:, :2]) <= 1) and set(np.unique(x[:, [2, 5, 6]])) <= {0.0, 1.0}
    assert 0.2 < city.test_labels.mean() < 0.45


def test_city_split_is_non_iid(city) -> None:
    label_rates = np.array([c.labels.mean() for c in city.clients])
    sizes = np.array([c.num_samples for c in city.clients])
    hour_cos = np.array([c.features[:, 1].mean() for c in city.clients])
    assert label_rates.std() > 0.05
    assert sizes.max() > 3 * sizes.min()
    assert hour_cos.std() > 0.2


def test_hidden_rule_is_what_the_model_can_learn(city) -> None:
    oracle = accuracy(np.append(HIDDEN_WEIGHTS, HIDDEN_BIAS), city.test_features, city.test_labels)
    assert 0.78 < oracle < 0.85  # 5 % label noise plus Bernoulli labels cap accuracy


@pytest.mark.parametrize("kwargs", [{"num_nodes": 0}, {"label_noise": 0.5}, {"test_samples": 0}])
def test_city_rejects_bad_sizes(kwargs) -> None:
    with pytest.raises(ValueError):
        generate_city(0, **kwargs)


def test_client_data_shape_check() -> None:
    with pytest.raises(ValueError, match="labels"):
        ClientData(0, np.zeros((3, 2)), np.zeros(2))


# --- model -------------------------------------------------------------------------


def test_gradient_matches_finite_differences(city) -> None:
    x, y = city.clients[0].features[:50], city.clients[0].labels[:50]
    w = np.random.default_rng(0).normal(size=8)
    l2 = 1e-2

    def objective(v):
        return log_loss(v, x, y) + 0.5 * l2 * np.sum(v[:-1] ** 2)

    eps = 1e-6
    numeric = np.array([(objective(w + eps * e) - objective(w - eps * e)) / (2 * eps) for e in np.eye(8)])
    assert np.allclose(gradient(w, x, y, l2), numeric, atol=1e-6)


def test_sigmoid_is_stable_for_large_logits() -> None:
    p = predict_proba(np.array([1.0, 0.0]), np.array([[1e4], [-1e4]]))
    assert p[0] == 1.0 and p[1] == 0.0


def test_centralised_baseline_reaches_the_oracle(city) -> None:
    x, y = city.pooled()
    w = train_centralised(x, y, SgdConfig(epochs=5), seed=0)
    oracle = accuracy(np.append(HIDDEN_WEIGHTS, HIDDEN_BIAS), city.test_features, city.test_labels)
    assert accuracy(w, city.test_features, city.test_labels) >= oracle - 0.01


def test_sgd_rejects_shape_mismatch(city) -> None:
    c = city.clients[0]
    with pytest.raises(ValueError, match="shape"):
        sgd(np.zeros(3), c.features, c.labels, SgdConfig(), np.random.default_rng(0))


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"learning_rate": 0.0}, {"l2": -1.0}])
def test_sgd_config_rejections(kwargs) -> None:
    with pytest.raises(ValueError):
        SgdConfig(**kwargs)


# --- FedAvg pieces -------------------------------------------------------------------


def test_client_update_clips_and_caps_weight(city) -> None:
    big = max(city.clients, key=lambda c: c.num_samples)
    cfg = FedAvgConfig(clip_norm=0.05, weight_cap=100)
    delta, weight, clipped = client_update(np.zeros(8), big, cfg, np.random.default_rng(0))
    assert clipped and np.linalg.norm(delta) == pytest.approx(0.05)
    assert weight == 1.0
    small = min(city.clients, key=lambda c: c.num_samples)
    _, w_small, _ = client_update(np.zeros(8), small, FedAvgConfig(weight_cap=10_000), np.random.default_rng(0))
    assert w_small == small.num_samples / 10_000


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


def test_round_rejects_more_clients_than_fixed_point_range(city) -> None:
    cfg = FedAvgConfig(clip_norm=2.0**21, frac_bits=40)  # clip * 2^40 = 2^61: at most 3 summands
    with pytest.raises(ValueError, match="fixed-point range"):
        fedavg_round(np.zeros(8), city.clients[:4], plain_sum, cfg, np.random.default_rng(0))


def test_round_rejects_bad_secure_sum_and_noise(city) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="secure_sum returned shape"):
        fedavg_round(np.zeros(8), city.clients[:2], lambda v: plain_sum(v)[:-1], FedAvgConfig(), rng)
    with pytest.raises(ValueError, match="dp_noise"):
        fedavg_round(np.zeros(8), city.clients[:2], plain_sum, FedAvgConfig(), rng, dp_noise=lambda n: np.zeros(n))


@pytest.mark.parametrize("rounds, per_round", [(0, 2), (1, 0), (1, 25)])
def test_run_rejections(city, rounds, per_round) -> None:
    with pytest.raises(ValueError):
        run_fedavg(city, rounds, per_round, plain_sum)


# --- FedAvg end to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_history(city):
    return run_fedavg(city, 30, 8, plain_sum)


def test_secure_fedavg_within_margin_of_centralised(city, plain_history) -> None:
    secure = run_fedavg(city, 30, 8, shared_sum)
    # Shares are exact in Z/2^64: the securely aggregated run is bit-identical to a plain-sum run.
    assert np.array_equal(secure.weights, plain_history.weights)
    assert secure.final_accuracy >= secure.centralised_accuracy - MARGIN
    # Measured with numpy 2.4: FedAvg 0.8152, centralised 0.8132, oracle 0.8125 (not pinned:
    # numpy's distribution samplers may change between releases; the margin is the claim).
    oracle = accuracy(np.append(HIDDEN_WEIGHTS, HIDDEN_BIAS), city.test_features, city.test_labels)
    assert secure.centralised_accuracy >= oracle - 0.01
    assert secure.rounds[0].accuracy < secure.final_accuracy  # it actually learned over rounds


def test_each_aggregator_total_alone_is_not_the_sum() -> None:
    updates = [encode_update(np.full(8, 0.1), 1.0, FedAvgConfig()) for _ in range(3)]
    totals = aggregator_totals(updates, num_aggregators=3)
    assert np.array_equal(sharing.combine(totals), plain_sum(updates))
    assert all(not np.array_equal(t, plain_sum(updates)) for t in totals)


def test_fedavg_through_paillier_matches_plain(city, plain_history) -> None:
    pk, sk = paillier.generate_keypair(insecure_test_bits=512)
    params = he.HomomorphicParams("paillier", city.num_features + 2, 2**63, 64)

    def paillier_sum(vectors):
        acc = he.HomomorphicAccumulator(params, [pk])
        for v in vectors:
            acc.add(he.encrypt_report(params, pk, ring.to_signed(v)))
        return ring.from_ints(np.array(he.decrypt_aggregate(params, sk, acc.to_bytes(), len(vectors)), dtype=object))

    short = run_fedavg(city, 3, 8, paillier_sum)
    reference = run_fedavg(city, 3, 8, plain_sum)
    assert np.array_equal(short.weights, reference.weights)
    assert [r.accuracy for r in short.rounds] == [r.accuracy for r in plain_history.rounds[:3]]


def test_zero_noise_changes_nothing_and_real_noise_does(city, plain_history) -> None:
    calls = []

    def zero(n):
        calls.append(n)
        return np.zeros(n, dtype=np.int64)

    quiet = run_fedavg(city, 30, 8, plain_sum, dp_noise=zero)
    assert calls == [9] * 30
    assert np.array_equal(quiet.weights, plain_history.weights)

    cfg = FedAvgConfig()
    sigma2 = Fraction(round((0.5 * cfg.sensitivity * 2**cfg.frac_bits) ** 2))  # noise multiplier z = 0.5
    rng = np.random.default_rng(9)
    noisy = run_fedavg(city, 30, 8, plain_sum, dp_noise=lambda n: dp_noise.discrete_gaussian_batch(sigma2, n, rng=rng))
    assert not np.array_equal(noisy.weights, plain_history.weights)
    assert noisy.final_accuracy > 0.7  # measured 0.797 with 8 clients per round
