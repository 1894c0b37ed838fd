"""The logistic congestion model: gradient, numerical stability, centralised baseline."""

from __future__ import annotations

import numpy as np
import pytest

from twinmpc.services.twin.city import HIDDEN_BIAS, HIDDEN_WEIGHTS, generate_city
from twinmpc.services.twin.traffic_model import SgdConfig, accuracy, gradient, log_loss, predict_proba, sgd, train_centralised


@pytest.fixture(scope="module")
def city():
    return generate_city(0)


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
