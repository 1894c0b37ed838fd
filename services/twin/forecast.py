"""The twin's congestion forecaster: the FedAvg-trained logistic model, its model card, coarsened levels.

The model (`traffic_model`) is trained with FedAvg across the simulated
city's edge nodes (`city`), through the real aggregators when a cluster is
given (`fedavg_runner.run_fedavg_on_cluster`, optionally with server-side DP)
or in process over a plain sum.  What it is served as: a *level* (low,
medium, high) from fixed probability cut points, never the score itself,
so each answer carries at most log2(3) bits about the weights.

`ModelCard` states the data, rounds, clipping, DP and accuracy (Mitchell et
al. 2019 "Model Cards for Model Reporting", reduced to what this run knows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from twinmpc.mpc.fedavg import FedAvgConfig
from twinmpc.services.twin.city import FEATURE_NAMES, CityDataset, generate_city
from twinmpc.services.twin.fedavg_training import FedAvgHistory, run_fedavg
from twinmpc.services.twin.local_cluster import LocalCluster
from twinmpc.services.twin.traffic_model import predict_proba

LEVELS = ("low", "medium", "high")
CUTS = (1 / 3, 2 / 3)  # probability of congestion at which the served level steps up
MAX_UPSTREAM = 1000  # vehicles per 15 min a request may state for one segment


class InvalidForecastRequest(ValueError):
    """A forecast request outside the model's input domain."""


def features(hour: float, weekend: bool, upstream_1: int, upstream_2: int, rain: bool, incident: bool) -> np.ndarray:
    """The model's feature vector (`city.FEATURE_NAMES`) from request fields, validated."""
    if not 0.0 <= hour < 24.0:
        raise InvalidForecastRequest("hour must lie in [0, 24)")
    for name, v in (("upstream_1", upstream_1), ("upstream_2", upstream_2)):
        if not 0 <= v <= MAX_UPSTREAM:
            raise InvalidForecastRequest(f"{name} must lie in [0, {MAX_UPSTREAM}] vehicles per 15 min")
    angle = 2.0 * np.pi * hour / 24.0
    return np.array([np.sin(angle), np.cos(angle), float(weekend), upstream_1 / 100.0, upstream_2 / 100.0, float(rain), float(incident)])


@dataclass(frozen=True)
class ModelCard:
    """What the served model is, how it was trained, and how well it does."""

    model: str
    features: tuple[str, ...]
    data: str
    training: str
    rounds: int
    clients_per_round: int
    clip_norm: float
    clipped_updates: int
    aggregation: str
    dp: str
    test_accuracy: float
    centralised_accuracy: float
    outputs: str
    limits: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Forecaster:
    """Weights plus card; `level` is all a client ever gets."""

    weights: np.ndarray
    card: ModelCard

    def level(self, x: np.ndarray) -> int:
        """Index into LEVELS for one feature vector."""
        p = float(predict_proba(self.weights, x[None, :])[0])
        return int(np.searchsorted(CUTS, p, side="right"))


def model_card(history: FedAvgHistory, dataset: CityDataset, config: FedAvgConfig, clients_per_round: int,
               aggregation: str, dp: str) -> ModelCard:
    local = history.local
    samples = sum(c.num_samples for c in dataset.clients)
    return ModelCard(
        model=f"logistic regression, {dataset.num_features + 1} weights (services/twin/traffic_model.py)",
        features=FEATURE_NAMES,
        data=(f"simulated city (services/twin/city.py): {len(dataset.clients)} edge nodes, {samples} training samples, "
              f"non-IID; {dataset.test_labels.size} city-wide test samples"),
        training=(f"FedAvg, {local.epochs} local epochs of minibatch SGD (batch {local.batch_size}, lr {local.learning_rate}, "
                  f"L2 {local.l2}), weight cap {config.weight_cap}, server lr {config.server_lr}, {config.frac_bits}-bit fixed point"),
        rounds=len(history.rounds),
        clients_per_round=clients_per_round,
        clip_norm=config.clip_norm,
        clipped_updates=sum(r.clipped for r in history.rounds),
        aggregation=aggregation,
        dp=dp,
        test_accuracy=round(history.final_accuracy, 4),
        centralised_accuracy=round(history.centralised_accuracy, 4),
        outputs=f"congestion level {'/'.join(LEVELS)} at P(congested) cut points {CUTS[0]:.2f}, {CUTS[1]:.2f}; scores are never served",
        limits="trained on synthetic data; one city-wide rule; not for safety decisions",
    )


def train_in_process(rounds: int = 20, clients_per_round: int = 8, seed: int = 0) -> Forecaster:
    """FedAvg over a plain sum (no aggregators): for tests and for a twin run without a cluster."""
    dataset = generate_city(seed)
    config = FedAvgConfig(seed=seed)
    history = run_fedavg(dataset, rounds, clients_per_round,
                         lambda v: np.sum(np.stack(v), axis=0, dtype=np.uint64), config=config)
    card = model_card(history, dataset, config, clients_per_round, "plain sum in process (no aggregators)", "none")
    return Forecaster(history.weights, card)


async def train_on_cluster(cluster: LocalCluster, *, rounds: int = 20, clients_per_round: int = 8, seed: int = 0,
                           epsilon: float | None = None) -> Forecaster:
    """FedAvg through the running aggregators (one window per round), optionally with distributed DP."""
    from twinmpc.services.twin.fedavg_runner import run_fedavg_on_cluster

    dataset = generate_city(seed)
    config = FedAvgConfig(seed=seed)
    run = await run_fedavg_on_cluster(cluster, dataset, rounds=rounds, clients_per_round=clients_per_round,
                                      config=config, epsilon=epsilon)
    dp = "none" if epsilon is None else (f"discrete Gaussian per round at epsilon {epsilon:g}, delta 1e-9, added by each of "
                                         f"{cluster.k} aggregators; L2 sensitivity {config.sensitivity:.3f}")
    card = model_card(run.history, dataset, config, clients_per_round,
                      f"Prio3/TwinRing64 secure sum through {cluster.k} aggregator processes over mTLS", dp)
    return Forecaster(run.history.weights, card)
