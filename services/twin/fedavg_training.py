"""FedAvg training of the twin's congestion model on the simulated city, in-process.

`mpc.fedavg` is the protocol (clip, encode, securely sum, decode, server step);
this module supplies what the protocol leaves to its user: each edge node's
local SGD of the logistic model (`traffic_model`) on its own data (`city`), the
per-round client sampling, the test metrics after every round, and the
centralised baseline the federated model is compared against.  ``secure_sum``
is injected: a plain sum in tests, the real aggregators in `fedavg_runner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from twinmpc.mpc.fedavg import FedAvgConfig, NoiseSampler, SecureSum, clip_update, encode_update, server_update
from twinmpc.services.twin.city import CityDataset, ClientData
from twinmpc.services.twin.traffic_model import SgdConfig, accuracy, init_weights, log_loss, sgd, train_centralised


def default_local_sgd() -> SgdConfig:
    """Each edge node's local optimiser: 2 epochs, minibatches of 32, learning rate 0.1."""
    return SgdConfig(epochs=2, batch_size=32, learning_rate=0.1)


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
    local: SgdConfig = field(default_factory=default_local_sgd)

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy


def client_update(
    global_weights: np.ndarray,
    client: ClientData,
    config: FedAvgConfig,
    rng: np.random.Generator,
    local: SgdConfig | None = None,
) -> tuple[np.ndarray, float, bool]:
    """Edge node: local SGD, clipped delta, weight.  Returns (delta, weight, was_clipped)."""
    trained = sgd(global_weights, client.features, client.labels, local or default_local_sgd(), rng)
    return clip_update(trained - global_weights, client.num_samples, config)


def fedavg_round(
    global_weights: np.ndarray,
    clients: Sequence[ClientData],
    secure_sum: SecureSum,
    config: FedAvgConfig,
    rng: np.random.Generator,
    dp_noise: NoiseSampler | None = None,
    local: SgdConfig | None = None,
) -> tuple[np.ndarray, int, float]:
    """One round over the given clients; returns (new weights, clipped count, weight sum)."""
    encoded = []
    clipped = 0
    for client in clients:
        delta, weight, was_clipped = client_update(global_weights, client, config, rng, local)
        clipped += was_clipped
        encoded.append(encode_update(delta, weight, config))
    weights, weight_sum = server_update(global_weights, encoded, secure_sum, config, dp_noise)
    return weights, clipped, weight_sum


def run_fedavg(
    dataset: CityDataset,
    rounds: int,
    clients_per_round: int,
    secure_sum: SecureSum,
    *,
    config: FedAvgConfig | None = None,
    dp_noise: NoiseSampler | None = None,
    local: SgdConfig | None = None,
    centralised: SgdConfig | None = None,
) -> FedAvgHistory:
    """Run FedAvg from the zero model and train the centralised baseline for comparison.

    ``centralised`` defaults to 5 epochs of the local optimiser on pooled data.
    Test accuracy and loss are recorded after every round.
    """
    config = config or FedAvgConfig()
    local = local or default_local_sgd()
    if rounds < 1 or not 1 <= clients_per_round <= len(dataset.clients):
        raise ValueError("rounds must be >= 1 and 1 <= clients_per_round <= number of clients")
    rng = np.random.default_rng(config.seed)
    weights = init_weights(dataset.num_features)
    history = []
    for r in range(rounds):
        chosen = np.sort(rng.choice(len(dataset.clients), size=clients_per_round, replace=False))
        weights, clipped, weight_sum = fedavg_round(
            weights, [dataset.clients[i] for i in chosen], secure_sum, config, rng, dp_noise, local
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
    base_cfg = centralised or SgdConfig(epochs=5, batch_size=local.batch_size, learning_rate=local.learning_rate, l2=local.l2)
    x, y = dataset.pooled()
    base = train_centralised(x, y, base_cfg, config.seed)
    return FedAvgHistory(
        rounds=tuple(history),
        weights=weights,
        centralised_weights=base,
        centralised_accuracy=accuracy(base, dataset.test_features, dataset.test_labels),
        local=local,
    )
