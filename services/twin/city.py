"""Synthetic city traffic data for federated-learning experiments (seeded, reproducible).

A city of ``num_nodes`` edge nodes (intersections); each node watches
``segments_per_node`` road segments.  One sample is one 15-minute observation
of one segment with features

    ===========  ==============================================================
    hour_sin     sin(2 pi h / 24), h = time of day in hours
    hour_cos     cos(2 pi h / 24)
    weekend      1 on Saturday/Sunday
    upstream_1   vehicles/15 min on the first upstream segment, / 100
    upstream_2   vehicles/15 min on the second upstream segment, / 100
    rain         1 if it rains (weather feed)
    incident     1 if an incident is reported on or near the segment
    ===========  ==============================================================

Upstream counts are Poisson with a two-peak (08:00, 17:30) daily profile, a
weekend damping and a per-node volume factor.  The label "congested" is drawn
from a hidden logistic rule of the features (`HIDDEN_WEIGHTS`, `HIDDEN_BIAS`)
and then flipped with probability ``label_noise``.  One rule holds city-wide;
the split across nodes is non-IID: node volume, incident rate, rainy share,
the hours a node reports (Dirichlet over time-of-day blocks) and the number of
samples (log-normal) all differ per node.

Not for: anything but experiments; randomness is a seeded numpy Generator,
never a source for keys or masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURE_NAMES = ("hour_sin", "hour_cos", "weekend", "upstream_1", "upstream_2", "rain", "incident")
HIDDEN_WEIGHTS = np.array([0.4, -0.6, -0.8, 2.2, 1.8, 1.1, 2.6])
HIDDEN_BIAS = -4.2
_PEAKS = ((8.0, 1.5, 120.0), (17.5, 2.0, 140.0))  # (hour, width, extra vehicles at the peak)
_BASE_VOLUME = 25.0


@dataclass(frozen=True)
class ClientData:
    """One edge node's local training data (never leaves the node in FedAvg)."""

    node: int
    features: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.labels.shape != (self.features.shape[0],):
            raise ValueError("features must be (n, d) and labels (n,)")

    @property
    def num_samples(self) -> int:
        return int(self.labels.size)


@dataclass(frozen=True)
class CityDataset:
    """Per-node training sets plus a held-out city-wide test set."""

    clients: tuple[ClientData, ...]
    test_features: np.ndarray
    test_labels: np.ndarray

    @property
    def num_features(self) -> int:
        return int(self.test_features.shape[1])

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """All training data in one place: the centralised baseline's view."""
        return (
            np.concatenate([c.features for c in self.clients]),
            np.concatenate([c.labels for c in self.clients]),
        )


def _profile(hours: np.ndarray) -> np.ndarray:
    """Expected vehicles per 15 min on a weekday at these hours."""
    volume = np.full(hours.shape, _BASE_VOLUME)
    for peak, width, height in _PEAKS:
        volume += height * np.exp(-0.5 * ((hours - peak) / width) ** 2)
    return volume


def _samples(
    rng: np.random.Generator,
    n: int,
    volume_factor: float,
    incident_rate: float,
    rain_rate: float,
    hour_weights: np.ndarray,
    label_noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    block = rng.choice(hour_weights.size, size=n, p=hour_weights)
    hours = (block + rng.random(n)) * (24.0 / hour_weights.size)
    weekend = (rng.random(n) < 2.0 / 7.0).astype(np.float64)
    rate = _profile(hours) * volume_factor * np.where(weekend == 1.0, 0.6, 1.0)
    up1 = rng.poisson(rate) / 100.0
    up2 = rng.poisson(0.8 * rate) / 100.0
    rain = (rng.random(n) < rain_rate).astype(np.float64)
    incident = (rng.random(n) < incident_rate).astype(np.float64)
    angle = 2.0 * np.pi * hours / 24.0
    x = np.column_stack([np.sin(angle), np.cos(angle), weekend, up1, up2, rain, incident])
    logit = x @ HIDDEN_WEIGHTS + HIDDEN_BIAS
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    flip = rng.random(n) < label_noise
    y[flip] = 1 - y[flip]
    return x, y


def generate_city(
    seed: int,
    *,
    num_nodes: int = 24,
    segments_per_node: int = 4,
    mean_samples_per_segment: int = 150,
    test_samples: int = 6000,
    label_noise: float = 0.05,
    hour_concentration: float = 0.5,
) -> CityDataset:
    """Draw a city: non-IID node training sets and an IID city-wide test set.

    ``hour_concentration`` is the Dirichlet parameter over six 4-hour blocks:
    small values make nodes report in few blocks (strong skew).
    """
    if num_nodes < 1 or segments_per_node < 1 or mean_samples_per_segment < 1 or test_samples < 1:
        raise ValueError("sizes must be positive")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError("label_noise must be in [0, 0.5)")
    rng = np.random.default_rng(seed)
    volume = rng.lognormal(0.0, 0.35, num_nodes)
    incident_rate = rng.uniform(0.01, 0.12, num_nodes)
    rain_rate = rng.uniform(0.05, 0.45, num_nodes)
    hour_weights = rng.dirichlet(np.full(6, hour_concentration), num_nodes)
    sizes = np.maximum(
        10, rng.lognormal(np.log(mean_samples_per_segment * segments_per_node), 0.6, num_nodes).astype(int)
    )
    clients = []
    for k in range(num_nodes):
        x, y = _samples(rng, int(sizes[k]), volume[k], incident_rate[k], rain_rate[k], hour_weights[k], label_noise)
        clients.append(ClientData(k, x, y))
    # Test set: the city as a whole, nodes weighted by size, all hours.
    mix = rng.choice(num_nodes, size=test_samples, p=sizes / sizes.sum())
    xs, ys = [], []
    for k in np.unique(mix):
        n = int(np.count_nonzero(mix == k))
        x, y = _samples(rng, n, volume[k], incident_rate[k], rain_rate[k], np.full(6, 1 / 6), label_noise)
        xs.append(x)
        ys.append(y)
    return CityDataset(tuple(clients), np.concatenate(xs), np.concatenate(ys))
