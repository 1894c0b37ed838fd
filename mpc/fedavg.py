"""Federated averaging (McMahan et al. 2017) over securely aggregated fixed-point updates.

The protocol, model-agnostic: what an edge node does with its locally trained
model delta, and what the server does with the aggregate.  Local training, the
data and the round loop belong to whoever runs it (the simulated twin trains a
logistic congestion model, `services.twin.fedavg_training`).

Who runs what, per round (a round is one collection window of a FixedPointVec task):

* server (controller): samples edge nodes, sends them the global weights.
* client (edge node): trains locally, then ``clip_update`` clips the model
  delta to L2 norm <= ``clip_norm`` and weighs it, and ``encode_update`` sends
  ``[w * delta, w]`` in fixed point (Z/2^64, `crypto.fixedpoint`), where the
  weight ``w = min(n_samples, weight_cap) / weight_cap`` is in (0, 1].
* aggregators: ``secure_sum`` (injected; the services pass one that goes
  through the real aggregators), optionally plus integer DP noise in
  fixed-point units from an injected sampler (DP-FedAvg, McMahan et al. 2018).
* server: ``server_update`` -> sum(w_i delta_i) / sum(w_i) (``decode_aggregate``),
  and the global model moves by ``server_lr`` times that average.

Bounds: every encoded update has L2 norm <= sqrt(clip_norm^2 + 1) (the delta
part <= clip_norm since w <= 1, the weight entry <= 1) - that is the L2
sensitivity a Gaussian-mechanism noise scale must be calibrated to.  Capping
the weight is what keeps the sensitivity bounded when clients differ in size.
The server sees only the sum; individual updates stay with the aggregators'
shares.  With DP noise the average is taken over the noisy weight sum; a
round whose noisy weight sum is not positive leaves the model unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from twinmpc.crypto import fixedpoint, ring
from twinmpc.mpc.measurements import FixedPointVec

SecureSum = Callable[[Sequence[np.ndarray]], np.ndarray]
NoiseSampler = Callable[[int], np.ndarray]


@dataclass(frozen=True)
class FedAvgConfig:
    """Round-independent protocol settings of a FedAvg run (``seed`` drives client sampling)."""

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


def clip_update(delta: np.ndarray, num_samples: int, config: FedAvgConfig) -> tuple[np.ndarray, float, bool]:
    """Edge node: the delta clipped to ``clip_norm`` and its capped weight.  Returns (delta, weight, was_clipped)."""
    delta = np.array(delta, dtype=np.float64)
    norm = float(np.linalg.norm(delta))
    clipped = norm > config.clip_norm
    if clipped:
        delta *= config.clip_norm / norm
    weight = min(num_samples, config.weight_cap) / config.weight_cap
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


def server_update(
    global_weights: np.ndarray,
    encoded: Sequence[np.ndarray],
    secure_sum: SecureSum,
    config: FedAvgConfig,
    dp_noise: NoiseSampler | None = None,
) -> tuple[np.ndarray, float]:
    """Aggregators then server: securely sum the encoded updates (plus noise), move the model.

    Returns (new weights, weight sum).  The fixed-point range is checked first:
    more summands than it allows would wrap around in Z/2^64.
    """
    if not encoded:
        raise ValueError("a round needs at least one update")
    if len(encoded) > fixedpoint.max_summands(config.frac_bits, config.entry_clip):
        raise ValueError("too many clients for the fixed-point range")
    total = np.asarray(secure_sum(encoded), dtype=ring.DTYPE)
    if total.shape != encoded[0].shape:
        raise ValueError(f"secure_sum returned shape {total.shape}, expected {encoded[0].shape}")
    if dp_noise is not None:
        noise = np.asarray(dp_noise(total.size))
        if noise.shape != total.shape or noise.dtype.kind not in "iu":
            raise ValueError("dp_noise must return an integer vector of the update length")
        total = ring.add(total, ring.from_ints(noise))
    avg, weight_sum = decode_aggregate(total, config)
    return global_weights + config.server_lr * avg, weight_sum
