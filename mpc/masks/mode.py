"""Masks mode in the task/window model: what the service and the collection path call.

* edge client: `round_config(task, window, attempt)` and `client_value(task, m)`
  feed `mpc.masks.client.MasksClient`;
* aggregator, after a round: `window_state(result)` is the per-window state the
  collection path stores and merges (`merge`), `count` and `noise_plan` read it,
  `release` seals the window's noisy sum to the collector's HPKE key;
* collector: `open_release` unseals and decodes it like every other mode.

The noise is already in the sum (each client added its part, `mpc.masks.noise`):
a collection adds none; `noise_plan` describes what the sum carries, so the
ledger charges the rho the clients calibrated to.

Window state encoding (version 1, big-endian)::

    version (u8) || window_start (u64) || length (u32) || vector (8 per element, LE)
    || rounds (u16) || { attempt (u32) || count (u64) || sigma2 (u16 len + "num/den") }*
    || rho (u16 len + "num/den") || delta (u16 len + "num/den")

A window normally holds one round; more (cohorts capped by max_clients) add up,
each round listed once so a repeated merge changes nothing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from twinmpc.crypto import ring, seal
from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc import dp
from twinmpc.mpc.errors import DecodeError, InvalidTask
from twinmpc.mpc.masks.params import MasksParams
from twinmpc.mpc.masks.plan import RoundConfig
from twinmpc.mpc.masks.server import RoundResult
from twinmpc.mpc.masks.session import Session
from twinmpc.mpc.task import Task

STATE_VERSION = 1


def params(task: Task) -> MasksParams:
    if task.mode != "masks" or task.masks is None:
        raise InvalidTask(f"task {task.task_id_b64} is not a masks-mode task")
    return task.masks


def l2_sensitivity(task: Task) -> int:
    """ceil(sqrt(L2^2)) of one report in the encoded domain: never under-estimated."""
    _, l2_squared = task.measurement.sensitivity()
    return math.isqrt(l2_squared - 1) + 1


def round_config(task: Task, window_start: int, attempt: int = 0) -> RoundConfig:
    """The public inputs of a window's round, identical on the aggregator and every client."""
    if window_start % task.window_seconds:
        raise InvalidTask(f"window_start {window_start} is not aligned to the task's {task.window_seconds}s windows")
    return RoundConfig(
        Session(task.task_id, window_start, attempt), task.measurement.length, params(task),
        dp.DpParams.from_dict(task.dp), l2_sensitivity(task), task.min_batch_size,
    )


def client_value(task: Task, measurement: Any) -> np.ndarray:
    """A client's measurement in Z/2^64: the type's own validation, range and clipping rules."""
    return task.measurement.encode(measurement)


@dataclass(frozen=True)
class WindowState:
    window_start: int
    vector: np.ndarray = field(repr=False, compare=False)
    rounds: tuple[tuple[int, int, Fraction], ...]  # (attempt, count, per-client sigma^2)
    rho: Fraction
    delta: Fraction

    @property
    def count(self) -> int:
        return sum(c for _, c, _ in self.rounds)


def _fraction(value: Fraction) -> bytes:
    text = f"{value.numerator}/{value.denominator}".encode()
    return struct.pack(">H", len(text)) + text


def encode_state(state: WindowState) -> bytes:
    out = [struct.pack(">BQI", STATE_VERSION, state.window_start, state.vector.shape[0]), ring.encode(state.vector),
           struct.pack(">H", len(state.rounds))]
    for attempt, count, sigma2 in state.rounds:
        out += [struct.pack(">IQ", attempt, count), _fraction(sigma2)]
    out += [_fraction(state.rho), _fraction(state.delta)]
    return b"".join(out)


def decode_state(task: Task, data: bytes) -> WindowState:
    """Parse a stored window state; `DecodeError` on a wrong version, length or trailing bytes."""
    view, pos = memoryview(data), 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise DecodeError("masks window state is truncated")
        pos += n
        return view[pos - n : pos].tobytes()

    def fraction() -> Fraction:
        text = take(struct.unpack(">H", take(2))[0]).decode("ascii", "replace")
        num, _, den = text.partition("/")
        if not (num.lstrip("-").isdigit() and den.isdigit()) or Fraction(int(num), int(den)).denominator != int(den):
            raise DecodeError("masks window state holds a non-canonical fraction")
        return Fraction(int(num), int(den))

    version, window_start, length = struct.unpack(">BQI", take(13))
    if version != STATE_VERSION:
        raise DecodeError(f"unsupported masks window state version {version}")
    if length != task.measurement.length:
        raise DecodeError(f"masks window state has {length} elements, the task has {task.measurement.length}")
    vector = ring.decode(take(8 * length), length)
    rounds = []
    for _ in range(struct.unpack(">H", take(2))[0]):
        attempt, count = struct.unpack(">IQ", take(12))
        rounds.append((attempt, count, fraction()))
    rho, delta = fraction(), fraction()
    if pos != len(view):
        raise DecodeError("masks window state has trailing bytes")
    return WindowState(window_start, vector, tuple(rounds), rho, delta)


def window_state(result: RoundResult) -> bytes:
    """The per-window state of one finished round (what the aggregator stores for collection)."""
    noise = result.plan.noise
    session = result.config.session
    return encode_state(WindowState(session.window_start, result.vector, ((session.attempt, result.count, noise.sigma2),), noise.rho, noise.delta))


def merge(task: Task) -> Callable[[bytes | None, bytes], bytes]:
    """Storage merge callback: add a round's state into the window's (a round already merged is skipped)."""

    def merge_states(old: bytes | None, delta: bytes) -> bytes:
        if old is None:
            decode_state(task, delta)
            return delta
        a, b = decode_state(task, old), decode_state(task, delta)
        if a.window_start != b.window_start:
            raise ValueError("cannot merge the states of two different windows")
        if {r[0] for r in b.rounds} <= {r[0] for r in a.rounds}:
            return old
        if {r[0] for r in b.rounds} & {r[0] for r in a.rounds}:
            raise ValueError("states overlap in some rounds but not all: refusing to double count")
        return encode_state(WindowState(a.window_start, ring.add(a.vector, b.vector), a.rounds + b.rounds, max(a.rho, b.rho), max(a.delta, b.delta)))

    return merge_states


def count(task: Task, state: bytes | None) -> int:
    return 0 if state is None else decode_state(task, state).count


def noise_plan(task: Task, state: bytes | None) -> dp.NoisePlan:
    """The noise the window's sum already carries (the clients' draws), as a ledger-ready plan."""
    d = task.measurement.length
    s = None if state is None else decode_state(task, state)
    if s is None or s.rho == 0 or s.count == 0:
        return dp.NoisePlan(dp.NONE, Fraction(0), Fraction(0), 1, d, Fraction(0), None, Fraction(0))
    total = sum((c * sigma2 for _, c, sigma2 in s.rounds), Fraction(0))
    return dp.NoisePlan(dp.GAUSSIAN, total, total / s.count, s.count, d, s.rho, None, s.delta)


def release_info(task: Task, window_start: int, report_count: int) -> bytes:
    return seal.binding("masks-release", task.task_id, struct.pack(">QQ", window_start, report_count))


def release(task: Task, state: bytes | None, noise: np.ndarray | None = None) -> bytes:
    """The window's noisy sum sealed to the collector's HPKE key, bound to (task, window, count).

    `noise` is extra central noise and is normally None: the clients' noise is already in the sum.
    """
    if task.collector_hpke_config is None:
        raise InvalidTask("mode 'masks' needs 'collector_hpke_config'")
    if state is None:
        raise InvalidTask("the window has no finished masks round to release")
    s = decode_state(task, state)
    vector = s.vector if noise is None else dp.add_noise(s.vector, np.asarray(noise, dtype=np.int64))
    return seal.seal(task.collector_hpke_config, ring.encode(vector), release_info(task, s.window_start, s.count))


def open_release(task: Task, keypair: HpkeKeypair, window_start: int, report_count: int, sealed: bytes) -> Any:
    """Collector: unseal a released window and decode it with the measurement type."""
    plain = seal.open_sealed(keypair, sealed, release_info(task, window_start, report_count))
    return task.measurement.decode(ring.decode(plain, task.measurement.length), report_count)




def card(task: Task, cohort: int | None = None) -> dict[str, Any]:
    """What `twinmpc task card` states for a masks-mode task: robustness, dropout tolerance, accuracy cost."""
    p = params(task)
    n = cohort or p.max_clients
    plan = round_config(task, 0).plan(n)
    m = task.measurement
    bound = {"count": "1", "sum": f"2^{getattr(m, 'bits', 0)} - 1", "mean": f"2^{getattr(m, 'bits', 0)} - 1",
             "sumvec": f"2^{getattr(m, 'bits', 0)} - 1 per entry", "fixedpointvec": f"|x| <= {getattr(m, 'clip', 0)} per entry"}[m.NAME]
    return {
        "threat_model": "one aggregator, honest-but-curious or active; it sees only masked inputs and the noisy sum",
        "validity_proofs": "none in this mode",
        "poisoning": (
            f"a client running the twinmpc client adds at most {bound} (its measurement type's range and clipping); "
            "a client running modified code can shift each coordinate of the sum by any value modulo 2^64, or make "
            "the round abort, undetected. Where edge nodes may be malicious use mode 'shares' with vdaf 'prio3' "
            "(validity proofs)"
        ),
        "dropout_tolerance": (
            f"up to {p.dropout} of the cohort; each client's secrets are shared t-of-k to its k neighbours with "
            "t = floor(k/2) + 1, so a neighbourhood may lose k - t members; fewer survivors abort the round (nothing released)"
        ),
        "example_cohort": {"clients": n, "neighbours_k": plan.k, "threshold_t": plan.t, "release_floor": plan.min_survivors,
                           "round_seconds": p.round_seconds},
        "noise": {
            **plan.noise.describe(),
            "accuracy_cost": (
                "noise variance of the release / the central mechanism's: "
                f"{plan.noise.describe(plan.min_survivors).get('variance_vs_central', 0):.3g} at the floor, "
                f"{plan.noise.describe(n).get('variance_vs_central', 0):.3g} if nobody drops out"
            ) if plan.noise.sigma2 else "no DP noise (dp.algo 'none')",
        },
    }

__all__ = [
    "WindowState",
    "card",
    "client_value",
    "count",
    "decode_state",
    "encode_state",
    "l2_sensitivity",
    "merge",
    "noise_plan",
    "open_release",
    "params",
    "release",
    "release_info",
    "round_config",
    "window_state",
]
