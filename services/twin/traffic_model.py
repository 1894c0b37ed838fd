"""Logistic-regression congestion predictor in numpy (local training for FedAvg).

The model is a weight vector of length d + 1 (the last entry is the bias):
P(congested | x) = sigmoid(w[:d] . x + w[d]).  Training is minibatch SGD on
the mean log-loss with a small L2 penalty on the non-bias weights; all of it
is vectorised per minibatch.  `train_centralised` is the baseline FedAvg is
compared against: the same optimiser on all nodes' data pooled in one place
(what twinmpc exists to avoid).

Not for: production forecasting; it is the smallest model that makes FedAvg
accuracy claims checkable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SgdConfig:
    """Local optimiser settings."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1
    l2: float = 1e-4

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")
        if not (self.learning_rate > 0 and self.l2 >= 0):
            raise ValueError("learning_rate must be > 0 and l2 >= 0")


def init_weights(num_features: int) -> np.ndarray:
    """All-zero model (predicts 0.5 everywhere)."""
    return np.zeros(num_features + 1)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def predict_proba(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    return _sigmoid(features @ weights[:-1] + weights[-1])


def log_loss(weights: np.ndarray, features: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy (probabilities clipped at 1e-12)."""
    p = np.clip(predict_proba(weights, features), 1e-12, 1 - 1e-12)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def accuracy(weights: np.ndarray, features: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((predict_proba(weights, features) >= 0.5) == (labels == 1)))


def gradient(weights: np.ndarray, features: np.ndarray, labels: np.ndarray, l2: float) -> np.ndarray:
    """Gradient of mean log-loss + (l2/2)*|w[:d]|^2."""
    err = predict_proba(weights, features) - labels
    grad = np.empty_like(weights)
    grad[:-1] = features.T @ err / labels.size + l2 * weights[:-1]
    grad[-1] = np.mean(err)
    return grad


def sgd(
    weights: np.ndarray, features: np.ndarray, labels: np.ndarray, config: SgdConfig, rng: np.random.Generator
) -> np.ndarray:
    """Minibatch SGD from ``weights`` (returns a new array); ``rng`` shuffles."""
    if features.shape[0] != labels.size or features.shape[1] + 1 != weights.size:
        raise ValueError("features, labels and weights disagree in shape")
    w = weights.astype(np.float64).copy()
    n = labels.size
    for _ in range(config.epochs):
        order = rng.permutation(n)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            w -= config.learning_rate * gradient(w, features[idx], labels[idx], config.l2)
    return w


def train_centralised(
    features: np.ndarray, labels: np.ndarray, config: SgdConfig, seed: int
) -> np.ndarray:
    """Baseline: SGD on the pooled data set from the zero model."""
    return sgd(init_weights(features.shape[1]), features, labels, config, np.random.default_rng(seed))
