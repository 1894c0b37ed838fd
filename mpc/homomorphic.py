"""Homomorphic aggregation for ``mode = "paillier"`` and ``mode = "ckks"`` tasks (safe layer).

Who runs what, and what crosses the wire:

* client (edge node): ``encrypt_report(params, public_key, measurement) -> report bytes``
* aggregator:         ``validate_ciphertext(params, public_key, report)``;
                      ``HomomorphicAccumulator.add(report)``, ``.to_bytes()`` to persist,
                      ``.merge(other)`` across replicas, then once per collection
                      ``add_noise_homomorphically(acc, noise)`` and ``acc.to_bytes()``
* collector:          ``decrypt_aggregate(params, secret_keys, acc_bytes, count) -> result``

Paillier reports pack ``floor((bits - 2) / w)`` entries per ciphertext, with
slot width ``w = bitlen(max_reports * max_abs) + 2`` (`crypto.paillier.pack`).

Trust model (see docs/homomorphic.md): a single aggregator sums ciphertexts it
cannot read; only the collector's secret key decrypts, and the collector only
ever receives the accumulator (a sum over >= min_batch_size reports, checked by
the service).  Unlike ``mode = "shares"``, there is no validity proof: a
malicious edge node can encrypt an out-of-range value and shift the sum by up
to the key's plaintext range.  Use these modes only where edge nodes are
trusted for correctness (not privacy) or where the shift is tolerable.

Key rotation: the accumulator of a window holds one group per key id (the
current key and any older keys still accepted), each with its own ciphertext
sum and count.  The collector decrypts every group with its key and adds the
plaintexts.  A report under a key id the accumulator was not given is rejected.

Accumulator state encoding (persisted durably by the service, sent to the collector)::

    version (1, = 1) || mode (1: 1 paillier, 2 ckks) || noised (1) || length (4) || groups (2)
    || { key id (8) || count (8) || payload length (4) || payload }*

where each payload is the crypto-layer ciphertext encoding of that group's sum.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np

from twinmpc.crypto import ckks, paillier
from twinmpc.mpc.errors import DecodeError, InvalidMeasurement, InvalidReport, InvalidTask
from twinmpc.mpc.measurements import Count, FixedPointVec, Histogram, MeasurementType, Sum, SumVec

PublicKey = Union[paillier.PaillierPublicKey, ckks.CkksPublicContext]
SecretKey = Union[paillier.PaillierSecretKey, ckks.CkksSecretContext]

STATE_VERSION = 1
_MODE_CODE = {"paillier": 1, "ckks": 2}
_STATE_HEADER = struct.Struct(">BBBIH")
_GROUP_HEADER = struct.Struct(">8sQI")
MAX_LENGTH = 1 << 20
_TASK_KEYS = {"mode", "length", "max_abs", "max_reports"}


@dataclass(frozen=True)
class HomomorphicParams:
    """Per-task parameters of a homomorphic mode.

    ``max_abs`` bounds |entry| of an honest measurement (int for Paillier,
    float for CKKS); ``max_reports`` bounds the summands of one window, so the
    sum (plus DP noise) stays inside the plaintext range and decrypts exactly.
    """

    mode: Literal["paillier", "ckks"]
    length: int
    max_abs: int | float
    max_reports: int

    def __post_init__(self) -> None:
        if self.mode not in _MODE_CODE:
            raise InvalidTask(f"homomorphic mode must be 'paillier' or 'ckks', got {self.mode!r}")
        if not isinstance(self.length, int) or not 1 <= self.length <= MAX_LENGTH:
            raise InvalidTask(f"length must be an int in [1, {MAX_LENGTH}]")
        if not isinstance(self.max_reports, int) or self.max_reports < 1:
            raise InvalidTask("max_reports must be a positive int")
        if self.mode == "paillier":
            if not isinstance(self.max_abs, int) or isinstance(self.max_abs, bool) or self.max_abs < 0:
                raise InvalidTask("paillier max_abs must be a non-negative int")
        elif not isinstance(self.max_abs, (int, float)) or not 0 < self.max_abs < float("inf"):
            raise InvalidTask("ckks max_abs must be a positive finite number")

    @classmethod
    def from_task(cls, doc: Mapping[str, Any]) -> HomomorphicParams:
        """Parse the homomorphic part of a task document, rejecting unknown keys."""
        unknown = set(doc) - _TASK_KEYS
        missing = _TASK_KEYS - set(doc)
        if unknown or missing:
            raise InvalidTask(f"homomorphic params: unknown {sorted(unknown)}, missing {sorted(missing)}")
        return cls(doc["mode"], doc["length"], doc["max_abs"], doc["max_reports"])

    @classmethod
    def for_measurement(
        cls, mode: Literal["paillier", "ckks"], measurement: MeasurementType, max_reports: int
    ) -> HomomorphicParams:
        """Parameters for a task's measurement type.

        Paillier encrypts the type's integer encoding read as signed
        (``ring.to_signed(measurement.encode(x))``); CKKS takes the real values of
        a FixedPointVec directly (|x| <= clip).
        """
        if isinstance(measurement, FixedPointVec):
            if mode == "ckks":
                return cls(mode, measurement.length, float(measurement.clip), max_reports)
            return cls(mode, measurement.length, math.ceil(measurement.clip * 2**measurement.frac_bits), max_reports)
        if mode == "ckks":
            raise InvalidTask("ckks mode carries real vectors: use a fixedpointvec measurement")
        if isinstance(measurement, (Count, Histogram)):
            return cls(mode, measurement.length, 1, max_reports)
        if isinstance(measurement, (Sum, SumVec)):
            return cls(mode, measurement.length, (1 << measurement.bits) - 1, max_reports)
        raise InvalidTask(f"measurement type {measurement.NAME!r} has no homomorphic mode")

    @property
    def max_abs_sum(self) -> int | float:
        return self.max_reports * self.max_abs

    @property
    def slot_bits(self) -> int:
        """Paillier packing slot width for this task (`paillier.slot_bits`)."""
        return paillier.slot_bits(int(self.max_abs_sum))

    def paillier_slots(self, key: paillier.PaillierPublicKey) -> int:
        """Measurement entries per Paillier ciphertext under ``key``."""
        return paillier.slots_per_ciphertext(key, self.slot_bits)

    def paillier_ciphertexts(self, key: paillier.PaillierPublicKey) -> int:
        """Ciphertexts per report under ``key``: ceil(length / slots)."""
        return -(-self.length // self.paillier_slots(key))

    def check_key(self, key: PublicKey) -> None:
        """The key must match the mode and hold the largest honest sum (TypeError/InvalidTask)."""
        if self.mode == "paillier":
            if not isinstance(key, paillier.PaillierPublicKey):
                raise TypeError("paillier task needs a PaillierPublicKey")
            if self.paillier_slots(key) < 1:
                raise InvalidTask("max_reports * max_abs needs a packing slot wider than the Paillier key")
        else:
            if not isinstance(key, ckks.CkksPublicContext):
                raise TypeError("ckks task needs a CkksPublicContext")
            if self.max_abs_sum > key.params.max_abs_sum:
                raise InvalidTask("max_reports * max_abs exceeds the CKKS decryptable range")


def public_key_from_bytes(
    mode: Literal["paillier", "ckks"], data: bytes, *, insecure_test_bits: int | None = None
) -> PublicKey:
    """Load a task's ``he_public_key`` (Paillier JSON or CKKS public context bundle).

    ``insecure_test_bits`` admits a small Paillier test modulus (tests only).
    Raises `DecodeError` on malformed or secret-bearing key material.
    """
    if mode == "paillier":
        return paillier.PaillierPublicKey.from_json(data, insecure_test_bits=insecure_test_bits)
    if mode == "ckks":
        return ckks.CkksPublicContext.from_bytes(data)
    raise InvalidTask(f"no homomorphic public key for mode {mode!r}")


def _public(key: PublicKey | SecretKey) -> PublicKey:
    if isinstance(key, paillier.PaillierSecretKey):
        return key.public_key
    if isinstance(key, ckks.CkksSecretContext):
        return key.public
    return key


def _paillier_values(params: HomomorphicParams, measurement: Any) -> list[int]:
    arr = np.atleast_1d(np.asarray(measurement))
    integral = arr.dtype.kind in "iu" or (
        arr.dtype == object and all(isinstance(v, int) and not isinstance(v, bool) for v in arr.flat)
    )
    if not integral:
        raise InvalidMeasurement("paillier measurements must be integers")
    if arr.ndim != 1 or arr.size != params.length:
        raise InvalidMeasurement(f"measurement must have {params.length} entries")
    values = [int(v) for v in arr.tolist()]
    if any(abs(v) > params.max_abs for v in values):
        raise InvalidMeasurement(f"measurement entry exceeds max_abs = {params.max_abs}")
    return values


def _ckks_values(params: HomomorphicParams, measurement: Any) -> np.ndarray:
    try:
        arr = np.atleast_1d(np.asarray(measurement, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise InvalidMeasurement("ckks measurements must be real numbers") from exc
    if arr.ndim != 1 or arr.size != params.length:
        raise InvalidMeasurement(f"measurement must have {params.length} entries")
    if not np.all(np.isfinite(arr)):
        raise InvalidMeasurement("measurement entries must be finite")
    if np.any(np.abs(arr) > params.max_abs):
        raise InvalidMeasurement(f"measurement entry exceeds max_abs = {params.max_abs}")
    return arr


def encrypt_report(
    params: HomomorphicParams,
    public_key: PublicKey,
    measurement: Any,
    *,
    rand: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Client: encrypt one measurement under the collector's key (wire bytes).

    ``rand`` is the Paillier randomness seam; CKKS draws its own from SEAL.
    """
    params.check_key(public_key)
    if params.mode == "paillier":
        values = _paillier_values(params, measurement)
        return _paillier_encrypt_packed(params, public_key, values, rand)  # type: ignore[arg-type]
    arr = _ckks_values(params, measurement)
    return ckks.encode_ciphertext(public_key, public_key.encrypt(arr), params.length)  # type: ignore[union-attr,arg-type]


def _paillier_encrypt_packed(
    params: HomomorphicParams, key: paillier.PaillierPublicKey, values: list[int], rand: Callable[[int], bytes]
) -> bytes:
    packed = paillier.pack(values, params.slot_bits, params.paillier_slots(key))
    return paillier.encode_ciphertexts(key, paillier.encrypt_vector(key, packed, rand=rand))


def _decode(params: HomomorphicParams, key: PublicKey, data: bytes) -> Any:
    if params.mode == "paillier":
        return paillier.decode_ciphertexts(key, data, params.paillier_ciphertexts(key))  # type: ignore[arg-type]
    return ckks.decode_ciphertext(key, data, params.length)  # type: ignore[arg-type]


def _encode(params: HomomorphicParams, key: PublicKey, value: Any) -> bytes:
    if params.mode == "paillier":
        return paillier.encode_ciphertexts(key, value)  # type: ignore[arg-type]
    return ckks.encode_ciphertext(key, value, params.length)  # type: ignore[arg-type]


def _add(params: HomomorphicParams, key: PublicKey, a: Any, b: Any) -> Any:
    if params.mode == "paillier":
        return paillier.add_vectors(key, [a, b])  # type: ignore[arg-type]
    return ckks.add(a, b)


def _peek_key_id(params: HomomorphicParams, data: bytes) -> str:
    return paillier.peek_key_id(data) if params.mode == "paillier" else ckks.peek_key_id(data)


def validate_ciphertext(params: HomomorphicParams, public_key: PublicKey, report: bytes) -> None:
    """Aggregator: full check of an uploaded report under ``public_key``.

    Raises `DecodeError` (size, range, structure) or `InvalidReport` (other key).
    """
    params.check_key(public_key)
    _decode(params, public_key, report)


class HomomorphicAccumulator:
    """Aggregator-side running sum of one window, one group per key id.

    ``public_keys`` are the keys this window accepts; the last one is the
    current key, which receives DP noise.  Not thread-safe: the service
    serialises access per window (one row, one transaction).
    """

    def __init__(self, params: HomomorphicParams, public_keys: Sequence[PublicKey]) -> None:
        if not public_keys:
            raise ValueError("at least one public key is required")
        for key in public_keys:
            params.check_key(key)
        self.params = params
        self._keys: dict[str, PublicKey] = {k.key_id: k for k in public_keys}
        self.current_key_id: str = public_keys[-1].key_id
        self._sums: dict[str, Any] = {}
        self._counts: dict[str, int] = {}
        self.noised = False

    def __repr__(self) -> str:
        return f"HomomorphicAccumulator(mode={self.params.mode}, length={self.params.length}, counts={self._counts})"

    @property
    def count(self) -> int:
        """Reports summed so far, over all key ids."""
        return sum(self._counts.values())

    @property
    def counts_by_key(self) -> dict[str, int]:
        return dict(self._counts)

    def _key_for(self, key_id: str) -> PublicKey:
        key = self._keys.get(key_id)
        if key is None:
            raise InvalidReport(f"report under key id {key_id} not accepted in this window")
        return key

    def _absorb(self, key_id: str, value: Any, count: int) -> None:
        key = self._keys[key_id]
        self._sums[key_id] = value if key_id not in self._sums else _add(self.params, key, self._sums[key_id], value)
        self._counts[key_id] = self._counts.get(key_id, 0) + count

    def add(self, report: bytes) -> None:
        """Validate one report and add it to its key's group (raises on any rejection)."""
        if self.noised:
            raise ValueError("accumulator already noised for collection; no further reports")
        if self.count >= self.params.max_reports:
            raise InvalidReport(f"window already holds max_reports = {self.params.max_reports}")
        key_id = _peek_key_id(self.params, report)
        key = self._key_for(key_id)
        self._absorb(key_id, _decode(self.params, key, report), 1)

    def merge(self, other: HomomorphicAccumulator) -> None:
        """Add another replica's accumulator of the same window into this one."""
        if other.params != self.params:
            raise ValueError("cannot merge accumulators of different parameters")
        if self.noised or other.noised:
            raise ValueError("cannot merge a noised accumulator")
        if self.count + other.count > self.params.max_reports:
            raise ValueError("merged accumulator would exceed max_reports")
        for key_id, value in other._sums.items():
            self._key_for(key_id)
            self._absorb(key_id, value, other._counts[key_id])

    def to_bytes(self) -> bytes:
        """Canonical state encoding (module docstring); groups sorted by key id."""
        parts = [
            _STATE_HEADER.pack(
                STATE_VERSION, _MODE_CODE[self.params.mode], int(self.noised), self.params.length, len(self._sums)
            )
        ]
        for key_id in sorted(self._sums):
            payload = _encode(self.params, self._keys[key_id], self._sums[key_id])
            parts.append(_GROUP_HEADER.pack(bytes.fromhex(key_id), self._counts[key_id], len(payload)))
            parts.append(payload)
        return b"".join(parts)

    @classmethod
    def from_bytes(
        cls, params: HomomorphicParams, public_keys: Sequence[PublicKey], data: bytes
    ) -> HomomorphicAccumulator:
        """Restore persisted state; every group ciphertext is re-validated."""
        acc = cls(params, public_keys)
        for key_id, count, payload in _parse_state(params, data, acc):
            acc._absorb(key_id, _decode(params, acc._key_for(key_id), payload), count)
        if acc.count > params.max_reports:
            raise DecodeError("accumulator state holds more than max_reports reports")
        return acc


def _parse_state(params: HomomorphicParams, data: bytes, acc: HomomorphicAccumulator) -> list[tuple[str, int, bytes]]:
    if len(data) < _STATE_HEADER.size:
        raise DecodeError("accumulator state too short")
    version, mode, noised, length, ngroups = _STATE_HEADER.unpack_from(data)
    if version != STATE_VERSION or mode != _MODE_CODE[params.mode] or length != params.length or noised > 1:
        raise DecodeError("accumulator state: version, mode, length or flag mismatch")
    acc.noised = bool(noised)
    off = _STATE_HEADER.size
    groups: list[tuple[str, int, bytes]] = []
    seen: set[str] = set()
    for _ in range(ngroups):
        if off + _GROUP_HEADER.size > len(data):
            raise DecodeError("accumulator state truncated")
        raw_id, count, plen = _GROUP_HEADER.unpack_from(data, off)
        off += _GROUP_HEADER.size
        key_id = raw_id.hex()
        if key_id in seen or off + plen > len(data):
            raise DecodeError("accumulator state: duplicate group or truncated payload")
        seen.add(key_id)
        groups.append((key_id, count, data[off : off + plen]))
        off += plen
    if off != len(data):
        raise DecodeError("accumulator state has trailing bytes")
    return groups


def add_noise_homomorphically(
    acc: HomomorphicAccumulator,
    noise: Sequence[int] | np.ndarray,
    *,
    step: float = 1.0,
    rand: Callable[[int], bytes] = os.urandom,
) -> None:
    """Aggregator: encrypt integer DP noise under the current key and add it, once.

    The noise vector comes from a DP sampler (crypto/dp_noise.py).  Paillier
    adds it exactly (``step`` must be 1); CKKS adds ``noise * step`` (the
    sampler's granularity), subject to CKKS's own approximation error.  The
    guarantee holds only if this single aggregator is honest: it alone chooses
    the noise and could omit it or tell the collector.  After this call the
    accumulator accepts no more reports and no second noise.
    """
    if acc.noised:
        raise ValueError("noise already added to this accumulator")
    arr = np.asarray(noise)
    integral = arr.dtype.kind in "iu" or (
        arr.dtype == object and all(isinstance(v, int) and not isinstance(v, bool) for v in arr.flat)
    )
    if arr.ndim != 1 or arr.size != acc.params.length or not integral:
        raise ValueError(f"noise must be an integer vector of length {acc.params.length}")
    key = acc._keys[acc.current_key_id]
    if acc.params.mode == "paillier":
        if step != 1.0:
            raise ValueError("paillier noise is integer: step must be 1")
        values = [int(v) for v in arr.tolist()]
        if acc.params.max_abs_sum + max(abs(v) for v in values) >= 1 << (acc.params.slot_bits - 1):
            raise ValueError("noise would overflow the packed Paillier slot")
        packed = paillier.pack(values, acc.params.slot_bits, acc.params.paillier_slots(key))  # type: ignore[arg-type]
        value: Any = paillier.encrypt_vector(key, packed, rand=rand)  # type: ignore[arg-type]
    else:
        real = arr.astype(np.float64) * step
        if acc.params.max_abs_sum + float(np.max(np.abs(real))) > key.params.max_abs_sum:  # type: ignore[union-attr]
            raise ValueError("noise would overflow the CKKS decryptable range")
        value = key.encrypt(real)  # type: ignore[union-attr]
    acc._absorb(acc.current_key_id, value, 0)
    acc.noised = True


def decrypt_aggregate(
    params: HomomorphicParams,
    secret_keys: SecretKey | Sequence[SecretKey],
    acc_bytes: bytes,
    count: int,
) -> list[int] | np.ndarray:
    """Collector: decrypt each key group with its key and add the plaintexts.

    ``count`` is the report count the collector was promised; a mismatch with
    the state raises `InvalidReport`.  Paillier returns exact signed Python
    ints (list of ``length``), CKKS a float64 array.
    """
    keys = [secret_keys] if isinstance(secret_keys, (paillier.PaillierSecretKey, ckks.CkksSecretContext)) else list(secret_keys)
    by_id = {k.key_id: k for k in keys}
    public = [_public(k) for k in keys]
    acc = HomomorphicAccumulator.from_bytes(params, public, acc_bytes)
    if acc.count != count:
        raise InvalidReport(f"aggregate holds {acc.count} reports, expected {count}")
    if params.mode == "paillier":
        total = [0] * params.length
        for key_id, sums in acc._sums.items():
            sk = by_id[key_id]
            packed = [paillier.decrypt(sk, c) for c in sums]  # type: ignore[arg-type]
            values = paillier.unpack(packed, params.slot_bits, params.paillier_slots(sk.public_key), params.length)  # type: ignore[union-attr]
            total = [t + v for t, v in zip(total, values)]
        return total
    out = np.zeros(params.length, dtype=np.float64)
    for key_id, sums in acc._sums.items():
        out += by_id[key_id].decrypt(sums)  # type: ignore[union-attr]
    return out
