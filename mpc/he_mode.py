"""Homomorphic task modes (``mode = "paillier" | "ckks"``) in the task/report model.

Adapts `mpc.homomorphic` to tasks: a report carries one ciphertext under the
collector's public key (``sealed_shares = (ciphertext,)``, empty public
share); the leader validates and sums ciphertexts per window and never holds
a secret key; the collector decrypts only a window's aggregate.

* Paillier: the measurement type's integer encoding, read as signed, is
  packed and encrypted (exact sums).
* CKKS: FixedPointVec entries, clipped, encrypted as reals (approximate sums,
  error bound in docs/homomorphic.md).

There is no validity proof in these modes: see docs/homomorphic.md.
"""

from __future__ import annotations

import os
import time as _time
from typing import Any

import numpy as np

from twinmpc.crypto import ring
from twinmpc.mpc import homomorphic as he
from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.measurements import FixedPointVec
from twinmpc.mpc.report import REPORT_ID_SIZE, Report
from twinmpc.mpc.task import Task

MODES = ("paillier", "ckks")  # the task modes this module serves


def params(task: Task) -> he.HomomorphicParams:
    return he.HomomorphicParams.for_measurement(task.mode, task.measurement, task.he_max_reports)


def public_keys(task: Task) -> list[he.PublicKey]:
    """Retired keys (still accepted and summed in their windows), then the current key.

    Cached per task object; each key is checked against the task's range.
    """
    cached = task.__dict__.get("_he_public_keys")
    if cached is None:
        if task.he_public_key is None:
            raise InvalidTask("homomorphic task without he_public_key")
        cached = []
        for raw in (*task.he_retired_keys, task.he_public_key):
            key = he.public_key_from_bytes(task.mode, raw)
            try:
                params(task).check_key(key)
            except TypeError as exc:
                raise InvalidTask(str(exc)) from exc
            cached.append(key)
        task.__dict__["_he_public_keys"] = cached
    return cached


def public_key(task: Task) -> he.PublicKey:
    """The current key, the one clients encrypt new reports under."""
    return public_keys(task)[-1]


def _plaintext(task: Task, measurement: Any) -> Any:
    encoded = task.measurement.encode(measurement)  # same validation and errors as every mode
    if task.mode == "ckks":
        if not isinstance(task.measurement, FixedPointVec):
            raise InvalidTask("ckks mode carries real vectors: use a fixedpointvec measurement")
        return np.clip(np.asarray(measurement, dtype=np.float64), -task.measurement.clip, task.measurement.clip)
    return ring.to_signed(encoded).tolist()


def encrypt_he_report(task: Task, measurement: Any, *, time: int | None = None, report_id: bytes | None = None) -> Report:
    """Client: one report carrying one ciphertext under the collector's key."""
    report_time = int(_time.time()) if time is None else int(time)
    report_id = os.urandom(REPORT_ID_SIZE) if report_id is None else report_id
    ciphertext = he.encrypt_report(params(task), public_key(task), _plaintext(task, measurement))
    return Report(report_id, report_time, b"", (ciphertext,))


def validate(task: Task, ciphertext: bytes) -> None:
    """Aggregator: size, key id (current or retired) and parameters of an untrusted ciphertext."""
    he.HomomorphicAccumulator(params(task), public_keys(task)).add(ciphertext)


def accumulate(task: Task, ciphertexts: list[bytes]) -> bytes:
    acc = he.HomomorphicAccumulator(params(task), public_keys(task))
    for ct in ciphertexts:
        acc.add(ct)
    return acc.to_bytes()


def merge(task: Task):
    def merge_states(old: bytes | None, delta: bytes) -> bytes:
        if old is None:
            return delta
        keys = public_keys(task)
        acc = he.HomomorphicAccumulator.from_bytes(params(task), keys, old)
        acc.merge(he.HomomorphicAccumulator.from_bytes(params(task), keys, delta))
        return acc.to_bytes()

    return merge_states


def count(task: Task, state: bytes | None) -> int:
    if state is None:
        return 0
    return he.HomomorphicAccumulator.from_bytes(params(task), public_keys(task), state).count


def release(task: Task, state: bytes | None, noise: np.ndarray | None) -> bytes:
    """Aggregator: the window's state with (optional) DP noise added under encryption."""
    keys = public_keys(task)
    acc = he.HomomorphicAccumulator(params(task), keys) if state is None else he.HomomorphicAccumulator.from_bytes(params(task), keys, state)
    if noise is not None:
        step = 2.0 ** -task.measurement.frac_bits if task.mode == "ckks" else 1.0
        he.add_noise_homomorphically(acc, np.asarray(noise, dtype=np.int64), step=step)
    return acc.to_bytes()


def decrypt(task: Task, secret_keys: he.SecretKey | list[he.SecretKey], state: bytes, num_measurements: int) -> Any:
    """Collector: decrypt the aggregate (each key group with its key) and decode it like every other mode."""
    values = he.decrypt_aggregate(params(task), secret_keys, state, num_measurements)
    if task.mode == "ckks":
        return [float(v) for v in values]
    return task.measurement.decode(ring.from_ints(np.array(values, dtype=object)), num_measurements)
