"""Measurement types: what a report may contain and how aggregates decode.

Each type validates a client's measurement (raising `InvalidMeasurement`),
encodes it as a vector over Z/2^64 of known length, decodes a summed
aggregate (signed, so negative DP noise stays negative), and states its
sensitivity for DP calibration.  Parsed from a task's ``measurement`` block,
e.g. ``{"type": "histogram", "buckets": 12}``.

Ring aggregation without proofs cannot stop an out-of-range value from a
malicious client; tasks that must be robust choose ``vdaf = "prio3"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from twinmpc.crypto import fixedpoint, ring
from twinmpc.mpc.errors import InvalidMeasurement, InvalidTask

MAX_VECTOR_LENGTH = 1 << 22
MAX_BITS = 48  # leaves 2^16 summands of headroom before a sum could wrap


def _int_vector(values: Any, length: int, bits: int, what: str) -> np.ndarray:
    if isinstance(values, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in values):
        raise InvalidMeasurement(f"{what}: entries must be integers, not booleans")
    try:
        arr = np.asarray(values)
    except (OverflowError, ValueError) as exc:
        raise InvalidMeasurement(f"{what}: not a vector of integers") from exc
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise InvalidMeasurement(f"{what}: expected {length} entries, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "O" and all(isinstance(v, int) and not isinstance(v, bool) for v in arr):
            if any(v < 0 or v >= 1 << bits for v in arr):
                raise InvalidMeasurement(f"{what}: entries must be integers in [0, 2^{bits})")
            return arr.astype(np.uint64)
        raise InvalidMeasurement(f"{what}: entries must be integers, got {arr.dtype}")
    if arr.size and (arr.min() < 0 or int(arr.max()) >= 1 << bits):
        raise InvalidMeasurement(f"{what}: entries must be integers in [0, 2^{bits})")
    return arr.astype(ring.DTYPE)


def _int_scalar(value: Any, bits: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidMeasurement(f"{what}: expected an integer, got {type(value).__name__}")
    if not 0 <= int(value) < 1 << bits:
        raise InvalidMeasurement(f"{what}: {int(value)} is outside [0, 2^{bits})")
    return int(value)


def _positive(params: dict, key: str, upper: int) -> int:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise InvalidTask(f"measurement parameter {key!r} must be an integer in 1..{upper}, got {value!r}")
    return value


@dataclass(frozen=True)
class MeasurementType:
    """Base: subclasses set NAME and implement encode/decode."""

    NAME: ClassVar[str]

    @property
    def length(self) -> int:
        raise NotImplementedError

    def encode(self, measurement: Any) -> np.ndarray:
        raise NotImplementedError

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> Any:
        raise NotImplementedError

    def sensitivity(self) -> tuple[int, int]:
        """(L1, squared L2) change of the encoded sum when one report is added."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {"type": self.NAME}


@dataclass(frozen=True)
class Count(MeasurementType):
    NAME: ClassVar[str] = "count"

    @property
    def length(self) -> int:
        return 1

    def encode(self, measurement: Any) -> np.ndarray:
        if isinstance(measurement, bool):
            measurement = int(measurement)
        return np.array([_int_scalar(measurement, 1, "count")], dtype=ring.DTYPE)

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> int:
        return int(ring.to_signed(aggregate)[0])

    def sensitivity(self) -> tuple[int, int]:
        return 1, 1


@dataclass(frozen=True)
class Sum(MeasurementType):
    bits: int
    NAME: ClassVar[str] = "sum"

    @property
    def length(self) -> int:
        return 1

    def encode(self, measurement: Any) -> np.ndarray:
        return np.array([_int_scalar(measurement, self.bits, "sum")], dtype=ring.DTYPE)

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> int:
        return int(ring.to_signed(aggregate)[0])

    def sensitivity(self) -> tuple[int, int]:
        top = (1 << self.bits) - 1
        return top, top * top

    def params(self) -> dict[str, Any]:
        return {"type": self.NAME, "bits": self.bits}


@dataclass(frozen=True)
class Mean(Sum):
    """Sum of integers in [0, 2^bits) decoded as the mean over the batch."""

    NAME: ClassVar[str] = "mean"

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, float | int]:
        total = int(ring.to_signed(aggregate)[0])
        return {"mean": total / num_measurements if num_measurements else math.nan, "sum": total, "count": num_measurements}


@dataclass(frozen=True)
class Histogram(MeasurementType):
    buckets: int
    NAME: ClassVar[str] = "histogram"

    @property
    def length(self) -> int:
        return self.buckets

    def encode(self, measurement: Any) -> np.ndarray:
        index = _int_scalar(measurement, 62, "histogram bucket")
        if index >= self.buckets:
            raise InvalidMeasurement(f"histogram bucket {index} is outside [0, {self.buckets})")
        out = ring.zeros(self.buckets)
        out[index] = 1
        return out

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> list[int]:
        return ring.to_signed(aggregate).tolist()

    def sensitivity(self) -> tuple[int, int]:
        return 1, 1

    def params(self) -> dict[str, Any]:
        return {"type": self.NAME, "buckets": self.buckets}


@dataclass(frozen=True)
class SumVec(MeasurementType):
    vector_length: int
    bits: int
    NAME: ClassVar[str] = "sumvec"

    @property
    def length(self) -> int:
        return self.vector_length

    def encode(self, measurement: Any) -> np.ndarray:
        return _int_vector(measurement, self.vector_length, self.bits, "sumvec")

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> list[int]:
        return ring.to_signed(aggregate).tolist()

    def sensitivity(self) -> tuple[int, int]:
        top = (1 << self.bits) - 1
        return top * self.vector_length, top * top * self.vector_length

    def params(self) -> dict[str, Any]:
        return {"type": self.NAME, "length": self.vector_length, "bits": self.bits}


@dataclass(frozen=True)
class FixedPointVec(MeasurementType):
    """Real vectors (e.g. model updates), clipped per entry and encoded in fixed point."""

    vector_length: int
    frac_bits: int
    clip: float
    l2_bound: float | None = None  # with vdaf "prio3": the proof also checks ||x||_2 <= l2_bound
    NAME: ClassVar[str] = "fixedpointvec"

    def __post_init__(self) -> None:
        try:
            fixedpoint.max_summands(self.frac_bits, self.clip)
        except ValueError as exc:
            raise InvalidTask(f"fixedpointvec: {exc}") from exc
        if self.l2_bound is not None and not (math.isfinite(self.l2_bound) and self.l2_bound > 0):
            raise InvalidTask("fixedpointvec 'l2_bound' must be a positive finite number")

    @property
    def length(self) -> int:
        return self.vector_length

    def encode(self, measurement: Any) -> np.ndarray:
        try:
            raw = np.asarray(measurement)
        except (TypeError, ValueError) as exc:
            raise InvalidMeasurement("fixedpointvec: not a vector of numbers") from exc
        if raw.dtype.kind not in "biuf":  # numeric strings, None, objects: a client bug, not a number
            raise InvalidMeasurement(f"fixedpointvec: not a vector of numbers (dtype {raw.dtype})")
        v = raw.astype(np.float64)
        if v.shape != (self.vector_length,):
            raise InvalidMeasurement(f"fixedpointvec: expected {self.vector_length} entries, got shape {v.shape}")
        return fixedpoint.encode(v, self.frac_bits, self.clip)

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> list[float]:
        return fixedpoint.decode(aggregate, self.frac_bits).tolist()

    def sensitivity(self) -> tuple[int, int]:
        top = int(math.ceil(self.clip * 2**self.frac_bits))
        l1, l2_squared = top * self.vector_length, top * top * self.vector_length
        if self.l2_bound is not None:  # enforced by the validity proof (Prio3 L2 variant)
            norm = int(math.ceil(self.l2_bound * 2**self.frac_bits))
            l1 = min(l1, math.isqrt(self.vector_length * norm * norm) + 1)
            l2_squared = min(l2_squared, norm * norm)
        return l1, l2_squared

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.NAME, "length": self.vector_length, "frac_bits": self.frac_bits, "clip": self.clip}
        if self.l2_bound is not None:
            out["l2_bound"] = self.l2_bound
        return out


def measurement_from_params(params: dict[str, Any]) -> MeasurementType:
    """Parse a task's measurement block; unknown types or keys are `InvalidTask`."""
    if not isinstance(params, dict) or "type" not in params:
        raise InvalidTask("measurement block must be a table with a 'type'")
    kind = params["type"]
    allowed: dict[str, set[str]] = {
        "count": set(),
        "sum": {"bits"},
        "mean": {"bits"},
        "histogram": {"buckets"},
        "sumvec": {"length", "bits"},
        "fixedpointvec": {"length", "frac_bits", "clip"},
    }
    optional = {"fixedpointvec": {"l2_bound"}}
    if kind not in allowed:
        raise InvalidTask(f"unknown measurement type {kind!r}; known: {sorted(allowed)}")
    extra = set(params) - allowed[kind] - optional.get(kind, set()) - {"type"}
    if extra:
        raise InvalidTask(f"measurement type {kind!r} does not take {sorted(extra)}")
    missing = allowed[kind] - set(params)
    if missing:
        raise InvalidTask(f"measurement type {kind!r} needs {sorted(missing)}")
    if kind == "count":
        return Count()
    if kind in ("sum", "mean"):
        bits = _positive(params, "bits", MAX_BITS)
        return Sum(bits) if kind == "sum" else Mean(bits)
    if kind == "histogram":
        return Histogram(_positive(params, "buckets", MAX_VECTOR_LENGTH))
    if kind == "sumvec":
        return SumVec(_positive(params, "length", MAX_VECTOR_LENGTH), _positive(params, "bits", MAX_BITS))
    clip = params["clip"]
    if isinstance(clip, bool) or not isinstance(clip, (int, float)):
        raise InvalidTask("fixedpointvec 'clip' must be a number")
    bound = params.get("l2_bound")
    if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
        raise InvalidTask("fixedpointvec 'l2_bound' must be a number")
    return FixedPointVec(
        _positive(params, "length", MAX_VECTOR_LENGTH),
        _positive(params, "frac_bits", fixedpoint.MAX_FRAC_BITS),
        float(clip),
        None if bound is None else float(bound),
    )
