"""Federated averaging (McMahan et al. 2017) over securely aggregated fixed-point updates.

Who runs what, per round (a round is one collection window of a FixedPointVec task):

* server (controller): samples ``clients_per_round`` edge nodes, sends them the
  global weights.
* client (edge node): ``client_update`` runs local SGD, takes the model delta,
  clips it to L2 norm <= ``clip_norm``, and ``encode_update`` sends
  ``[w * delta, w]`` in fixed point (Z/2^64, `crypto.fixedpoint`), where the
  weight ``w = min(n_samples, weight_cap) / weight_cap`` is in (0, 1].
* aggregators: ``secure_sum`` (injected; the services pass one that goes
  through the real aggregators), optionally plus integer DP noise in
  fixed-point units from an injected sampler (DP-FedAvg, McMahan et al. 2018).
* server: ``decode_aggregate`` -> sum(w_i delta_i) / sum(w_i), and the global
  model moves by ``server_lr`` times that average.

Bounds: every encoded update has L2 norm <= sqrt(clip_norm^2 + 1) (the delta
part <= clip_norm since w <= 1, the weight entry <= 1) - that is the L2
sensitivity a Gaussian-mechanism noise scale must be calibrated to.  Capping
the weight is what keeps the sensitivity bounded when clients differ in size.
The server sees only the sum; individual updates stay with the aggregators'
shares.  With DP noise the average is taken over the noisy weight sum; a
round whose noisy weight sum is not positive leaves the model unchanged.

`run_fedavg` is the whole loop in-process, with the centralised baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from twinmpc.crypto import fixedpoint, ring
from twinmpc.mpc.city_data import CityDataset, ClientData
from twinmpc.mpc.measurements import FixedPointVec
from twinmpc.mpc.traffic_model import SgdConfig, accuracy, init_weights, log_loss, sgd, train_centralised

SecureSum = Callable[[Sequence[np.ndarray]], np.ndarray]
NoiseSampler = Callable[[int], np.ndarray]


@dataclass(frozen=True)
class FedAvgConfig:
    """Round-independent settings of a FedAvg run."""

    local: SgdConfig = field(default_factory=lambda: SgdConfig(epochs=2, batch_size=32, learning_rate=0.1))
    clip_norm: float = 2.0
    weight_cap: int = 500
    frac_bits: int = 24
    server_lr: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError("clip_norm must be a positive finite number")
        if self.weight_cap < 1 or not self.server_lr > 0:
            raise ValueError("weight_cap must be >= 1 and server_lr > 0")
        fixedpoint.max_summands(self.frac_bits, self.entry_clip)  # validates frac_bits / range

    @property
    def entry_clip(self) -> float:
        """Per-entry bound of an encoded update: max(clip_norm, 1) (L2 bound implies it)."""
        return max(self.clip_norm, 1.0)

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of one client's encoded update: sqrt(clip_norm^2 + 1)."""
        return float(np.hypot(self.clip_norm, 1.0))

    def measurement(self, num_features: int) -> FixedPointVec:
        """The FixedPointVec task measurement a round's window collects."""
        return FixedPointVec(num_features + 2, self.frac_bits, self.entry_clip)


@dataclass(frozen=True)
class RoundResult:
    round: int
    clients: tuple[int, ...]
    clipped: int
    weight_sum: float
    accuracy: float
    loss: float


@dataclass(frozen=True)
class FedAvgHistory:
    rounds: tuple[RoundResult, ...]
    weights: np.ndarray
    centralised_weights: np.ndarray
    centralised_accuracy: float

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy


def client_update(
    global_weights: np.ndarray, client: ClientData, config: FedAvgConfig, rng: np.random.Generator
) -> tuple[np.ndarray, float, bool]:
    """Edge node: local SGD, clipped delta, weight.  Returns (delta, weight, was_clipped)."""
    delta = sgd(global_weights, client.features, client.labels, config.local, rng) - global_weights
    norm = float(np.linalg.norm(delta))
    clipped = norm > config.clip_norm
    if clipped:
        delta *= config.clip_norm / norm
    weight = min(client.num_samples, config.weight_cap) / config.weight_cap
    return delta, weight, clipped


def encode_update(delta: np.ndarray, weight: float, config: FedAvgConfig) -> np.ndarray:
    """Edge node: fixed-point ``[weight * delta, weight]`` in Z/2^64 (the measurement)."""
    if not 0 < weight <= 1:
        raise ValueError("weight must be in (0, 1]")
    if float(np.linalg.norm(delta)) > config.clip_norm * (1 + 1e-12):
        raise ValueError("delta exceeds clip_norm: clip before encoding")
    return fixedpoint.encode(np.append(weight * delta, weight), config.frac_bits, config.entry_clip)


def decode_aggregate(encoded_sum: np.ndarray, config: FedAvgConfig) -> tuple[np.ndarray, float]:
    """Server: (weighted average delta, weight sum) from the (noisy) aggregate."""
    total = fixedpoint.decode(encoded_sum, config.frac_bits)
    weight_sum = float(total[-1])
    if weight_sum <= 0:
        return np.zeros(total.size - 1), weight_sum
    return total[:-1] / weight_sum, weight_sum


def fedavg_round(
    global_weights: np.ndarray,
    clients: Sequence[ClientData],
    secure_sum: SecureSum,
    config: FedAvgConfig,
    rng: np.random.Generator,
    dp_noise: NoiseSampler | None = None,
) -> tuple[np.ndarray, int, float]:
    """One round over the given clients; returns (new weights, clipped count, weight sum)."""
    if len(clients) > fixedpoint.max_summands(config.frac_bits, config.entry_clip):
        raise ValueError("too many clients for the fixed-point range")
    encoded = []
    clipped = 0
    for client in clients:
        delta, weight, was_clipped = client_update(global_weights, client, config, rng)
        clipped += was_clipped
        encoded.append(encode_update(delta, weight, config))
    total = np.asarray(secure_sum(encoded), dtype=ring.DTYPE)
    if total.shape != encoded[0].shape:
        raise ValueError(f"secure_sum returned shape {total.shape}, expected {encoded[0].shape}")
    if dp_noise is not None:
        noise = np.asarray(dp_noise(total.size))
        if noise.shape != total.shape or noise.dtype.kind not in "iu":
            raise ValueError("dp_noise must return an integer vector of the update length")
        total = ring.add(total, ring.from_ints(noise))
    avg, weight_sum = decode_aggregate(total, config)
    return global_weights + config.server_lr * avg, clipped, weight_sum


def run_fedavg(
    dataset: CityDataset,
    rounds: int,
    clients_per_round: int,
    secure_sum: SecureSum,
    *,
    config: FedAvgConfig | None = None,
    dp_noise: NoiseSampler | None = None,
    centralised: SgdConfig | None = None,
) -> FedAvgHistory:
    """Run FedAvg from the zero model and train the centralised baseline for comparison.

    ``centralised`` defaults to 5 epochs of the local optimiser on pooled data.
    Test accuracy and loss are recorded after every round.
    """
    config = config or FedAvgConfig()
    if rounds < 1 or not 1 <= clients_per_round <= len(dataset.clients):
        raise ValueError("rounds must be >= 1 and 1 <= clients_per_round <= number of clients")
    rng = np.random.default_rng(config.seed)
    weights = init_weights(dataset.num_features)
    history = []
    for r in range(rounds):
        chosen = np.sort(rng.choice(len(dataset.clients), size=clients_per_round, replace=False))
        weights, clipped, weight_sum = fedavg_round(
            weights, [dataset.clients[i] for i in chosen], secure_sum, config, rng, dp_noise
        )
        history.append(
            RoundResult(
                round=r,
                clients=tuple(int(i) for i in chosen),
                clipped=clipped,
                weight_sum=weight_sum,
                accuracy=accuracy(weights, dataset.test_features, dataset.test_labels),
                loss=log_loss(weights, dataset.test_features, dataset.test_labels),
            )
        )
    base_cfg = centralised or SgdConfig(
        epochs=5, batch_size=config.local.batch_size, learning_rate=config.local.learning_rate, l2=config.local.l2
    )
    x, y = dataset.pooled()
    base = train_centralised(x, y, base_cfg, config.seed)
    return FedAvgHistory(
        rounds=tuple(history),
        weights=weights,
        centralised_weights=base,
        centralised_accuracy=accuracy(base, dataset.test_features, dataset.test_labels),
    )
