"""Task output policy: post-processing a collector applies to a released result.

Pure post-processing of an already differentially private result (no privacy
cost, Bun-Steinke 2016 Lemma 1.8), so it can only make a release coarser:

* ``clamp``: clip to the feasible range of the batch (a count of n reports
  lies in [0, n]); noise can push a small count below zero, clamping removes
  the impossible value without hiding that noise was added.
* ``round_to``: round integer results to a multiple of this step (e.g. report
  vehicle counts to the nearest 10).

Task document: ``"output": {"clamp": true, "round_to": 10}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.measurements import Count, FixedPointVec, Histogram, Mean, MeasurementType, Sum, SumVec

_KEYS = {"clamp", "round_to"}


@dataclass(frozen=True)
class OutputPolicy:
    clamp: bool = False
    round_to: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.clamp, bool):
            raise InvalidTask("output.clamp must be true or false")
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or not 1 <= self.round_to <= 1 << 40:
            raise InvalidTask("output.round_to must be a positive integer")

    @classmethod
    def from_dict(cls, doc: Any) -> OutputPolicy:
        if not isinstance(doc, dict):
            raise InvalidTask("'output' must be a table such as {\"clamp\": true, \"round_to\": 10}")
        unknown = sorted(set(doc) - _KEYS)
        if unknown:
            raise InvalidTask(f"output: unknown key {unknown[0]!r} (allowed: {sorted(_KEYS)})")
        return cls(doc.get("clamp", False), doc.get("round_to", 1))

    def to_dict(self) -> dict[str, Any]:
        return {"clamp": self.clamp, "round_to": self.round_to}

    def apply(self, measurement: MeasurementType, result: Any, num_measurements: int) -> Any:
        """Clamp to the feasible range, then round; results keep their shape and type."""
        if isinstance(measurement, Mean):
            mean = result["mean"]
            if self.clamp:
                mean = min(max(mean, 0.0), float((1 << measurement.bits) - 1))
            return {**result, "mean": mean}
        if isinstance(measurement, FixedPointVec):
            if not self.clamp:
                return result
            top = measurement.clip * num_measurements
            return [min(max(v, -top), top) for v in result]
        high = _entry_max(measurement) * num_measurements
        if isinstance(result, list):
            return [self._one(v, high) for v in result]
        return self._one(result, high)

    def _one(self, value: int, high: int) -> int:
        if self.clamp:
            value = min(max(value, 0), high)
        if self.round_to > 1:
            value = self.round_to * ((2 * value + self.round_to) // (2 * self.round_to))
        return value


def _entry_max(measurement: MeasurementType) -> int:
    if isinstance(measurement, (Count, Histogram)):
        return 1
    if isinstance(measurement, (Sum, SumVec)):
        return (1 << measurement.bits) - 1
    raise InvalidTask(f"no output policy for measurement type {measurement.NAME!r}")
