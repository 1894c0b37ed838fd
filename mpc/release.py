"""Releasing one aggregator's share of a window: the batch it holds, its noise, the sealed bytes.

The one seam every task mode implements, so services never branch on
``task.mode``: an aggregator keeps an opaque per-window *state* (the
`Accumulator` encoding in ``shares`` mode, a ciphertext sum in the homomorphic
modes) and, to release it,

* `noise_plan(task, state)` is the noise one aggregator's release carries (in
  masks mode: the clients' distributed noise already in the window's sum);
* `batch_of(task, state)` says how many reports it holds and which (checksum),
  the numbers every aggregator compares before releasing anything;
* `release(task, window_start, agg_index, state, plan)` adds *this*
  aggregator's full DP noise to its share, in the scheme's ring, field or under
  encryption (libprio-rs's ``AggregatorWithNoise``), and returns the bytes for
  the collector (sealed to the collector's HPKE key, or the collector-key
  ciphertext).  The noise is drawn here, once per call: the caller stores the
  result before it leaves the process, so a retry returns the stored bytes and
  never a second draw.

Modes: ``shares`` (VDAF shares, K aggregators), ``paillier`` / ``ckks`` (one
aggregator adds ciphertexts), ``masks`` (one aggregator, SecAgg+ with the
clients' noise in the unmasked sum: nothing is added at release).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc import dp, he_mode
from twinmpc.mpc.masks import mode as masks_mode
from twinmpc.mpc.task import Task

SHARES, MASKS = "shares", "masks"


@dataclass(frozen=True)
class WindowBatch:
    """What a window's state holds: the report count and the report-set checksum."""

    count: int
    checksum: bytes


def noise_plan(task: Task, state: bytes | None = None) -> dp.NoisePlan:
    """The noise each aggregator adds for one collection of this task (masks: what the window's sum carries)."""
    if task.mode == MASKS:
        return masks_mode.noise_plan(task, state)
    key = (json.dumps(task.dp, sort_keys=True), json.dumps(task.measurement.params(), sort_keys=True), task.num_aggregators)
    plan = _PLANS.get(key)
    if plan is None:  # calibration searches numerically (zCDP <-> (epsilon, delta)): once per parameter set
        if len(_PLANS) > 1024:
            _PLANS.clear()
        plan = _PLANS[key] = _calibrate(task)
    return plan


_PLANS: dict[tuple[str, str, int], dp.NoisePlan] = {}


def _calibrate(task: Task) -> dp.NoisePlan:
    l1, l2_squared = task.measurement.sensitivity()
    return dp.calibrate(
        dp.DpParams.from_dict(task.dp),
        l1_sensitivity=l1,
        l2_sensitivity=math.isqrt(l2_squared - 1) + 1,  # ceil(sqrt): never under-estimate
        dimension=task.measurement.length,
        num_aggregators=task.num_aggregators,
    )


def add_noise_to_share(task: Task, agg_share: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Add signed integer noise to an aggregate share in the scheme's ring (TwinRing64) or field (Prio3)."""
    field = getattr(task.scheme, "field", None)
    if field is None:
        return dp.add_noise(agg_share, noise)
    noised = dp.add_noise(np.array(field.to_ints(agg_share), dtype=object), noise, field.MODULUS)
    return field.from_ints([int(v) for v in noised])


def batch_of(task: Task, state: bytes | None) -> WindowBatch:
    """Count and checksum of a window state (an empty window is count 0)."""
    if task.mode == SHARES:
        acc = agg.Accumulator(task) if state is None else agg.Accumulator.decode(task, state)
        return WindowBatch(acc.count, acc.checksum)
    if task.mode == MASKS:
        return WindowBatch(masks_mode.count(task, state), b"")
    return WindowBatch(he_mode.count(task, state), b"")


def release(task: Task, window_start: int, agg_index: int, state: bytes | None, plan: dp.NoisePlan) -> bytes:
    """This aggregator's noised share of the window, ready for the collector."""
    if task.mode == MASKS:
        return masks_mode.release(task, state)  # the clients' noise is already in the sum
    noise = None if plan.distribution == dp.NONE else plan.sample(task.measurement.length)
    if task.mode != SHARES:
        return he_mode.release(task, state, noise)
    acc = agg.Accumulator(task) if state is None else agg.Accumulator.decode(task, state)
    share = acc.agg_share if noise is None else add_noise_to_share(task, acc.agg_share, noise)
    return agg.seal_aggregate_share(task, window_start, agg_index, acc, share)


def merge_states(task: Task):
    """The storage merge callback for this task's window states."""
    if task.mode == MASKS:
        return masks_mode.merge(task)
    if task.mode != SHARES:
        return he_mode.merge(task)

    def merge(old: bytes | None, delta: bytes) -> bytes:
        if old is None:
            return delta
        acc = agg.Accumulator.decode(task, old)
        acc.merge(agg.Accumulator.decode(task, delta))
        return acc.encode()

    return merge


__all__ = ["WindowBatch", "add_noise_to_share", "batch_of", "merge_states", "noise_plan", "release"]
