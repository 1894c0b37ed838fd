"""The simulated city's FedAvg data: seeded, non-IID across nodes, learnable by the model."""

from __future__ import annotations

import numpy as np
import pytest

from twinmpc.services.twin.city import HIDDEN_BIAS, HIDDEN_WEIGHTS, ClientData, generate_city
from twinmpc.services.twin.traffic_model import accuracy


@pytest.fixture(scope="module")
def city():
    return generate_city(0)


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
