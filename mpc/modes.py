"""Task modes: the one interface share-based, homomorphic and masks tasks implement.

Services never branch on ``task.mode``; they ask the task's mode object
(`mode_of`) what to do at each step of a report's life:

* clients: how a measurement becomes a report (secret-shared and sealed, or
  encrypted under the collector's key; masks inputs join rounds instead);
* hosting: which checks a task must pass before an aggregator stores it;
* upload: the shape a report must have, and whether the aggregator must
  still open its HPKE share (shares mode) or holds its view already (a
  homomorphic report is one ciphertext under the collector's key); masks
  tasks take their inputs through SecAgg+ rounds, never UploadReport;
* aggregation: whether reports are verified with the helpers (VDAF
  preparation) or summed by this aggregator alone (ciphertexts);
* release: an aggregator keeps an opaque per-window *state* (the
  `Accumulator` encoding in shares mode, a ciphertext sum in the
  homomorphic modes, a finished round's sum in masks mode) and, to release
  it, `noise_plan` is the noise one aggregator's release carries, `batch_of`
  the count and checksum every aggregator compares before releasing, and
  `release` adds *this* aggregator's full DP noise to its share, in the
  scheme's ring, field or under encryption (libprio-rs's
  ``AggregatorWithNoise``), returning the bytes for the collector. The noise
  is drawn there, once per call: the caller stores the result before it
  leaves the process, so a retry returns the stored bytes, never a second draw;
* collection: which key the collector opens a result with, and how.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinmpc.crypto.seal import HpkeConfig
from twinmpc.mpc import aggregator as agg
from twinmpc.mpc import collector, dp, he_mode
from twinmpc.mpc.client import shard_reports
from twinmpc.mpc.errors import DecodeError, InvalidReport, InvalidTask
from twinmpc.mpc.masks import mode as masks_mode
from twinmpc.mpc.report import Report, ReportShare
from twinmpc.mpc.task import Task

Merge = Callable[[bytes | None, bytes], bytes]


@dataclass(frozen=True)
class WindowBatch:
    """What a window's state holds: the report count and the report-set checksum."""

    count: int
    checksum: bytes


@dataclass(frozen=True)
class AloneAggregation:
    """Reports one aggregator summed without helpers: a state delta per window, and the verdicts."""

    deltas: dict[int, bytes]
    accepted: list[bytes]
    rejected: list[bytes]


class TaskMode:
    """What differs between modes, as answers services act on; the defaults are a single aggregator's."""

    name: str
    #: the leader proves each report valid together with its helpers (VDAF preparation)
    verifies_with_helpers = False
    #: inputs arrive as reports through UploadReport (masks inputs come through rounds)
    takes_uploads = True
    #: a window's state is the blob its round left (masks), not the window table's accumulator
    state_in_round_blob = False
    #: the collector opens results with its HPKE key (False: with its homomorphic secret key)
    collector_holds_hpke_key = True
    #: the task's protocol state lives in one process's memory (masks rounds): one serving process only
    needs_one_process = False

    def make_reports(self, task: Task, measurements: Sequence[Any], time: int | None = None) -> list[Report]:
        """Client: one report per measurement, ready to upload to the leader."""
        raise InvalidTask(f"mode {task.mode!r} takes its inputs through rounds, not uploaded reports")

    def verify_key_size(self, task: Task) -> int:
        """Bytes of the verify key the aggregators share (0: no joint verification)."""
        return 0

    def privacy_card(self, task: Task) -> dict[str, Any]:
        """What a collection of this task adds for privacy, for the operator's task card."""
        return {"noise_per_collection": self.noise_plan(task).describe()}

    def open_collection(self, task: Task, key: Any, window_start: int, report_count: int, checksum: bytes,
                        sealed: Sequence[bytes]) -> Any:
        """Collector: the window's aggregate from what Collect returned, opened with `key`."""
        if len(sealed) != 1:
            raise DecodeError(f"a {task.mode} collection carries one aggregate, got {len(sealed)}")
        return self._open_one(task, key, window_start, report_count, sealed[0])

    def _open_one(self, task: Task, key: Any, window_start: int, report_count: int, sealed: bytes) -> Any:
        raise NotImplementedError

    def own_hpke_config(self, task: Task, agg_index: int) -> HpkeConfig | None:
        """The HPKE config aggregator `agg_index` must hold the private key of, if the mode seals to it."""
        return None

    def check_hosting(self, task: Task, agg_index: int, verify_key: bytes) -> None:
        """Refuse a task aggregator `agg_index` cannot host (after its own key was checked)."""
        if agg_index != 0:
            raise InvalidTask(f"mode {task.mode!r} runs on one aggregator (index 0)")

    def check_keys(self, task: Task) -> None:
        """Keys named by the task (created or amended) are usable; nothing to check by default."""

    def admit(self, task: Task, report: Report) -> Report | ReportShare:
        """Check a report's shape: a `Report` still to open, or this aggregator's `ReportShare` as is."""
        raise DecodeError(f"a {task.mode} task takes no uploaded reports")

    def aggregate_alone(self, task: Task, shares: Sequence[ReportShare]) -> AloneAggregation:
        """Sum reports without helpers (modes that do not verify with helpers)."""
        raise InvalidTask(f"mode {task.mode!r} does not aggregate uploaded reports alone")

    def noise_plan(self, task: Task, state: bytes | None = None) -> dp.NoisePlan:
        """The noise each aggregator adds for one collection of this task."""
        return _calibrated_plan(task)

    def batch_of(self, task: Task, state: bytes | None) -> WindowBatch:
        raise NotImplementedError

    def release(self, task: Task, window_start: int, agg_index: int, state: bytes | None, plan: dp.NoisePlan) -> bytes:
        raise NotImplementedError

    def merge(self, task: Task) -> Merge:
        """The storage merge callback for this task's window states."""
        raise NotImplementedError


class SharesMode(TaskMode):
    """VDAF shares over K aggregators (Prio3 or TwinRing64)."""

    name = "shares"
    verifies_with_helpers = True

    def make_reports(self, task: Task, measurements: Sequence[Any], time: int | None = None) -> list[Report]:
        return shard_reports(task, list(measurements), time=time)

    def verify_key_size(self, task: Task) -> int:
        return task.scheme.VERIFY_KEY_SIZE

    def open_collection(self, task: Task, key: Any, window_start: int, report_count: int, checksum: bytes,
                        sealed: Sequence[bytes]) -> Any:
        return collector.unshard(task, key, window_start, report_count, checksum, list(sealed)).result

    def own_hpke_config(self, task: Task, agg_index: int) -> HpkeConfig | None:
        return task.aggregators[agg_index].hpke_config

    def check_hosting(self, task: Task, agg_index: int, verify_key: bytes) -> None:
        if len(verify_key) != task.scheme.VERIFY_KEY_SIZE:
            raise InvalidTask(f"verify_key must be {task.scheme.VERIFY_KEY_SIZE} bytes for {task.vdaf}")

    def admit(self, task: Task, report: Report) -> Report | ReportShare:
        if len(report.sealed_shares) != task.num_aggregators:
            raise DecodeError(f"report carries {len(report.sealed_shares)} sealed shares, task has {task.num_aggregators} aggregators")
        return report

    def batch_of(self, task: Task, state: bytes | None) -> WindowBatch:
        acc = agg.Accumulator(task) if state is None else agg.Accumulator.decode(task, state)
        return WindowBatch(acc.count, acc.checksum)

    def release(self, task: Task, window_start: int, agg_index: int, state: bytes | None, plan: dp.NoisePlan) -> bytes:
        acc = agg.Accumulator(task) if state is None else agg.Accumulator.decode(task, state)
        noise = _noise(task, plan)
        share = acc.agg_share if noise is None else add_noise_to_share(task, acc.agg_share, noise)
        return agg.seal_aggregate_share(task, window_start, agg_index, acc, share)

    def merge(self, task: Task) -> Merge:
        def merge(old: bytes | None, delta: bytes) -> bytes:
            if old is None:
                return delta
            acc = agg.Accumulator.decode(task, old)
            acc.merge(agg.Accumulator.decode(task, delta))
            return acc.encode()

        return merge


class HomomorphicMode(TaskMode):
    """Paillier or CKKS: one aggregator adds ciphertexts under the collector's key."""

    collector_holds_hpke_key = False

    def __init__(self, name: str) -> None:
        self.name = name

    def make_reports(self, task: Task, measurements: Sequence[Any], time: int | None = None) -> list[Report]:
        return [he_mode.encrypt_he_report(task, m, time=time) for m in measurements]

    def _open_one(self, task: Task, key: Any, window_start: int, report_count: int, sealed: bytes) -> Any:
        return he_mode.decrypt(task, key, sealed, report_count)

    def check_hosting(self, task: Task, agg_index: int, verify_key: bytes) -> None:
        super().check_hosting(task, agg_index, verify_key)
        self.check_keys(task)

    def check_keys(self, task: Task) -> None:
        he_mode.public_key(task)  # must load, carry no secret, and hold the window's largest sum

    def admit(self, task: Task, report: Report) -> Report | ReportShare:
        if len(report.sealed_shares) != 1 or report.public_share:
            raise DecodeError(f"a {task.mode} report carries exactly one ciphertext and no public share")
        he_mode.validate(task, report.sealed_shares[0])
        return ReportShare(report.report_id, report.time, b"", report.sealed_shares[0])

    def aggregate_alone(self, task: Task, shares: Sequence[ReportShare]) -> AloneAggregation:
        by_window: dict[int, list[bytes]] = {}
        accepted: list[bytes] = []
        rejected: list[bytes] = []
        for share in shares:
            try:
                he_mode.validate(task, share.sealed_share)  # again: stored bytes are not trusted blindly
            except InvalidReport:
                rejected.append(share.report_id)
                continue
            by_window.setdefault(task.window_start(share.time), []).append(share.sealed_share)
            accepted.append(share.report_id)
        return AloneAggregation({w: he_mode.accumulate(task, cts) for w, cts in by_window.items()}, accepted, rejected)

    def batch_of(self, task: Task, state: bytes | None) -> WindowBatch:
        return WindowBatch(he_mode.count(task, state), b"")

    def release(self, task: Task, window_start: int, agg_index: int, state: bytes | None, plan: dp.NoisePlan) -> bytes:
        return he_mode.release(task, state, _noise(task, plan))

    def merge(self, task: Task) -> Merge:
        return he_mode.merge(task)


class MasksMode(TaskMode):
    """SecAgg+ rounds at one aggregator; the clients' noise is already in the unmasked sum."""

    name = "masks"
    takes_uploads = False
    state_in_round_blob = True
    needs_one_process = True

    def noise_plan(self, task: Task, state: bytes | None = None) -> dp.NoisePlan:
        return masks_mode.noise_plan(task, state)

    def privacy_card(self, task: Task) -> dict[str, Any]:
        return {"masks": masks_mode.card(task)}  # the clients add the noise, calibrated to the dropout floor

    def _open_one(self, task: Task, key: Any, window_start: int, report_count: int, sealed: bytes) -> Any:
        return masks_mode.open_release(task, key, window_start, report_count, sealed)

    def batch_of(self, task: Task, state: bytes | None) -> WindowBatch:
        return WindowBatch(masks_mode.count(task, state), b"")

    def release(self, task: Task, window_start: int, agg_index: int, state: bytes | None, plan: dp.NoisePlan) -> bytes:
        return masks_mode.release(task, state)  # nothing added: the clients' noise is in the sum

    def merge(self, task: Task) -> Merge:
        return masks_mode.merge(task)


_BY_NAME: dict[str, TaskMode] = {m.name: m for m in (SharesMode(), HomomorphicMode("paillier"), HomomorphicMode("ckks"), MasksMode())}


def mode_of(task: Task) -> TaskMode:
    """The mode object of a task (its mode name was validated when the task loaded)."""
    return _BY_NAME[task.mode]


def noise_plan(task: Task, state: bytes | None = None) -> dp.NoisePlan:
    """The noise each aggregator adds for one collection of this task (masks: what the window's sum carries)."""
    return mode_of(task).noise_plan(task, state)


def batch_of(task: Task, state: bytes | None) -> WindowBatch:
    """Count and checksum of a window state (an empty window is count 0)."""
    return mode_of(task).batch_of(task, state)


def add_noise_to_share(task: Task, agg_share: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Add signed integer noise to an aggregate share in the scheme's ring (TwinRing64) or field (Prio3)."""
    field = getattr(task.scheme, "field", None)
    if field is None:
        return dp.add_noise(agg_share, noise)
    noised = dp.add_noise(np.array(field.to_ints(agg_share), dtype=object), noise, field.MODULUS)
    return field.from_ints([int(v) for v in noised])


def _noise(task: Task, plan: dp.NoisePlan) -> np.ndarray | None:
    return None if plan.distribution == dp.NONE else plan.sample(task.measurement.length)


_PLANS: dict[tuple[str, str, int], dp.NoisePlan] = {}


def _calibrated_plan(task: Task) -> dp.NoisePlan:
    key = (json.dumps(task.dp, sort_keys=True), json.dumps(task.measurement.params(), sort_keys=True), task.num_aggregators)
    plan = _PLANS.get(key)
    if plan is None:  # calibration searches numerically (zCDP <-> (epsilon, delta)): once per parameter set
        if len(_PLANS) > 1024:
            _PLANS.clear()
        l1, l2_squared = task.measurement.sensitivity()
        plan = _PLANS[key] = dp.calibrate(
            dp.DpParams.from_dict(task.dp),
            l1_sensitivity=l1,
            l2_sensitivity=math.isqrt(l2_squared - 1) + 1,  # ceil(sqrt): never under-estimate
            dimension=task.measurement.length,
            num_aggregators=task.num_aggregators,
        )
    return plan


__all__ = [
    "AloneAggregation", "HomomorphicMode", "MasksMode", "SharesMode", "TaskMode", "WindowBatch", "add_noise_to_share",
    "batch_of", "mode_of", "noise_plan",
]
