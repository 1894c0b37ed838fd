"""Data minimisation at the edge: rules applied to one reading, then one window.

Pure code, no I/O.  Raw readings stop here: what leaves this module is an
integer measurement per (task, window), built only from the fields the rules
keep.  Two stages:

* :meth:`Pipeline.apply` runs the stream's rules, in order, on one decoded JSON
  object and returns a :class:`MinimisedReading` (or raises
  :class:`RejectedReading` with a fixed reason label, never the payload).
* :class:`WindowAccumulator` folds a window's readings into the task's
  measurement, dropping zones below k contributors (``suppress_below_k``).

The errors carry the rule index and field name only, so they are safe to log.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Hashable

import numpy as np

from twinmpc.crypto import dp_noise
from twinmpc.mpc.errors import TwinMpcError

from .config import (
    BucketRule,
    ClipRule,
    CoarsenTimeRule,
    DropRule,
    KeepRule,
    LocalNoiseRule,
    QuantizeRule,
    StreamConfig,
    SuppressBelowKRule,
    ZoneRule,
)

__all__ = ["MinimisedReading", "Pipeline", "RejectedReading", "WindowAccumulator", "WindowResult", "window_start"]

_PSEUDONYM_LABEL = b"twinmpc/edge/v1/contributor-pseudonym"


class RejectedReading(TwinMpcError):
    """A reading failed a rule; ``reason`` is a fixed metric label, never payload content."""

    def __init__(self, reason: str, *, rule_index: int | None = None, field: str | None = None) -> None:
        where = f" at rules[{rule_index}]" if rule_index is not None else ""
        what = f" (field {field!r})" if field is not None else ""
        super().__init__(f"reading rejected: {reason}{where}{what}")
        self.reason = reason
        self.rule_index = rule_index
        self.field = field


def window_start(t: int, window_seconds: int) -> int:
    """Start of the time-interval window containing t (DAP time-interval batches)."""
    return t - t % window_seconds


@dataclass(frozen=True)
class MinimisedReading:
    """What the rules let through from one reading.

    ``contributor`` is a keyed pseudonym (16 bytes) when a suppress rule is
    configured, else None; ``fields`` is the minimised record, for inspection.
    """

    time: int
    value: int
    index: int | None
    zone: Hashable | None
    contributor: bytes | None
    fields: dict[str, Any]

    def __repr__(self) -> str:
        return (
            f"MinimisedReading(time={self.time}, value={self.value}, index={self.index}, "
            f"zone={self.zone!r}, contributor={'<pseudonym>' if self.contributor else None})"
        )


def _number(record: dict[str, Any], name: str, rule_index: int | None) -> int | float:
    if name not in record:
        raise RejectedReading("missing_field", rule_index=rule_index, field=name)
    v = record[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RejectedReading("bad_type", rule_index=rule_index, field=name)
    if isinstance(v, float) and not math.isfinite(v):
        raise RejectedReading("bad_type", rule_index=rule_index, field=name)
    return v


def _integer(record: dict[str, Any], name: str, rule_index: int | None) -> int:
    v = _number(record, name, rule_index)
    if isinstance(v, float):
        if not v.is_integer():
            raise RejectedReading("non_integer", rule_index=rule_index, field=name)
        return int(v)
    return v


class Pipeline:
    """The ordered rules of one stream, bound to its task's window length."""

    def __init__(self, stream: StreamConfig, *, window_seconds: int, pseudonym_key: bytes) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if len(pseudonym_key) < 16:
            raise ValueError("pseudonym_key must be at least 16 bytes")
        self.stream = stream
        self.window_seconds = window_seconds
        self._key = hmac.new(pseudonym_key, _PSEUDONYM_LABEL, hashlib.sha256).digest()
        self.suppress: SuppressBelowKRule | None = next(
            (r for r in stream.rules if isinstance(r, SuppressBelowKRule)), None
        )
        self.noise: LocalNoiseRule | None = next((r for r in stream.rules if isinstance(r, LocalNoiseRule)), None)

    def __repr__(self) -> str:
        return f"Pipeline(stream={self.stream.name!r}, rules={len(self.stream.rules)}, key=<redacted>)"

    def reading_time(self, record: dict[str, Any], now: int) -> int:
        """The reading's own timestamp (seconds), else the receipt time; refuse clock skew."""
        name = self.stream.time_field
        if name not in record:
            return now
        t = math.floor(_number(record, name, None))
        if abs(t - now) > self.stream.max_skew_seconds:
            raise RejectedReading("stale", field=name)
        return t

    def apply(self, record: Any, now: int) -> MinimisedReading:
        """Run every rule in order on a decoded JSON object received at ``now``."""
        if not isinstance(record, dict):
            raise RejectedReading("not_object")
        t = self.reading_time(record, now)
        rec = dict(record)
        contributor: bytes | None = None
        for i, rule in enumerate(self.stream.rules):
            if isinstance(rule, DropRule):
                for name in rule.fields:
                    rec.pop(name, None)
            elif isinstance(rule, KeepRule):
                rec = {name: rec[name] for name in rule.fields if name in rec}
            elif isinstance(rule, CoarsenTimeRule):
                if rule.field in rec:
                    rec[rule.field] = window_start(math.floor(_number(rec, rule.field, i)), self.window_seconds)
            elif isinstance(rule, ZoneRule):
                rec[rule.into] = self._zone(rule, rec, i)
                for name in (rule.lat, rule.lon):
                    if name != rule.into:
                        rec.pop(name, None)
            elif isinstance(rule, BucketRule):
                rec[rule.into or rule.field] = bisect.bisect_right(rule.edges, _number(rec, rule.field, i))
            elif isinstance(rule, QuantizeRule):
                step = Fraction(rule.step)
                rec[rule.into or rule.field] = math.floor(Fraction(_number(rec, rule.field, i)) / step)
            elif isinstance(rule, ClipRule):
                v = _number(rec, rule.field, i)
                rec[rule.field] = min(max(v, rule.min), rule.max)
            elif isinstance(rule, LocalNoiseRule):
                pass  # window-level: see add_noise()
            elif isinstance(rule, SuppressBelowKRule):
                contributor = self._pseudonym(rec.pop(rule.contributor, None), rule, i)
                if not isinstance(rec.get(rule.zone), (int, str)) or isinstance(rec.get(rule.zone), bool):
                    raise RejectedReading("missing_field" if rule.zone not in rec else "bad_type", rule_index=i, field=rule.zone)
            else:  # pragma: no cover - the config union is closed
                raise TypeError(f"unhandled rule {type(rule).__name__}")
        m = self.stream.measurement
        value = _integer(rec, m.field, None)
        index = _integer(rec, m.index, None) if m.index is not None else None
        zone = rec[self.suppress.zone] if self.suppress is not None else None
        return MinimisedReading(time=t, value=value, index=index, zone=zone, contributor=contributor, fields=rec)

    def add_noise(self, value: int | list[int], rng: np.random.Generator | None = None) -> int | list[int]:
        """Add the local_noise rule's exact discrete noise to a window value (identity without one).

        ``rng`` is a seam for tests only; production noise comes from os.urandom.
        """
        if self.noise is None:
            return value
        n = len(value) if isinstance(value, list) else 1
        if self.noise.mechanism == "discrete_laplace":
            noise = dp_noise.discrete_laplace_batch(self.noise.scale(), n, rng)
        else:
            noise = dp_noise.discrete_gaussian_batch(self.noise.scale(), n, rng)
        if isinstance(value, list):
            return [v + int(z) for v, z in zip(value, noise.tolist())]
        return value + int(noise[0])

    @staticmethod
    def _zone(rule: ZoneRule, rec: dict[str, Any], i: int) -> int:
        lat = _number(rec, rule.lat, i)
        lon = _number(rec, rule.lon, i)
        if not (rule.lat_min <= lat <= rule.lat_max and rule.lon_min <= lon <= rule.lon_max):
            raise RejectedReading("out_of_area", rule_index=i)
        row = min(rule.rows - 1, math.floor((lat - rule.lat_min) / (rule.lat_max - rule.lat_min) * rule.rows))
        col = min(rule.cols - 1, math.floor((lon - rule.lon_min) / (rule.lon_max - rule.lon_min) * rule.cols))
        return row * rule.cols + col

    def _pseudonym(self, raw: Any, rule: SuppressBelowKRule, i: int) -> bytes:
        if raw is None:
            raise RejectedReading("missing_field", rule_index=i, field=rule.contributor)
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise RejectedReading("bad_type", rule_index=i, field=rule.contributor)
        tag = b"s" if isinstance(raw, str) else b"i"
        return hmac.new(self._key, tag + str(raw).encode("utf-8"), hashlib.sha256).digest()[:16]


@dataclass
class _Stats:
    n: int = 0
    total: int = 0
    lo: int | None = None
    hi: int | None = None
    last_time: int = -1
    last_value: int = 0

    def add(self, time: int, value: int) -> None:
        self.n += 1
        self.total += value
        self.lo = value if self.lo is None else min(self.lo, value)
        self.hi = value if self.hi is None else max(self.hi, value)
        if time >= self.last_time:
            self.last_time, self.last_value = time, value

    def merge(self, other: "_Stats") -> None:
        self.n += other.n
        self.total += other.total
        for attr, pick in (("lo", min), ("hi", max)):
            a, b = getattr(self, attr), getattr(other, attr)
            setattr(self, attr, b if a is None else a if b is None else pick(a, b))
        if other.last_time >= self.last_time:
            self.last_time, self.last_value = other.last_time, other.last_value


@dataclass(frozen=True)
class WindowResult:
    """A closed window: the combined value(s) and what the policy removed."""

    value: int | list[int] | None
    readings: int
    suppressed_zones: int
    suppressed_readings: int


@dataclass
class WindowAccumulator:
    """Readings of one (stream, window), kept per zone until the window closes.

    ``length`` is the vector length for indexed (SumVec-style) measurements,
    None for scalar ones.
    """

    combine: str
    k: int | None = None
    length: int | None = None
    _zones: dict[Hashable, dict[int | None, _Stats]] = field(default_factory=dict)
    _contributors: dict[Hashable, set[bytes]] = field(default_factory=dict)

    def add(self, reading: MinimisedReading) -> None:
        """Fold one reading in; a vector index outside [0, length) is rejected."""
        if self.length is not None:
            if reading.index is None or not 0 <= reading.index < self.length:
                raise RejectedReading("bad_index", field="index")
        per_index = self._zones.setdefault(reading.zone, {})
        per_index.setdefault(reading.index, _Stats()).add(reading.time, reading.value)
        if reading.contributor is not None:
            self._contributors.setdefault(reading.zone, set()).add(reading.contributor)

    @property
    def readings(self) -> int:
        return sum(s.n for per in self._zones.values() for s in per.values())

    def close(self) -> WindowResult:
        """Apply k-suppression and combine; value None when nothing survives."""
        merged: dict[int | None, _Stats] = {}
        suppressed_zones = suppressed_readings = kept = 0
        for zone, per_index in self._zones.items():
            n = sum(s.n for s in per_index.values())
            if self.k is not None and len(self._contributors.get(zone, ())) < self.k:
                suppressed_zones += 1
                suppressed_readings += n
                continue
            kept += n
            for idx, stats in per_index.items():
                merged.setdefault(idx, _Stats()).merge(stats)
        if kept == 0:
            return WindowResult(None, 0, suppressed_zones, suppressed_readings)
        if self.length is None:
            value: int | list[int] = self._fold(merged[None])
        else:
            value = [self._fold(merged[i]) if i in merged else 0 for i in range(self.length)]
        return WindowResult(value, kept, suppressed_zones, suppressed_readings)

    def to_state(self) -> dict[str, Any]:
        """JSON-able state, so a graceful stop can hand an open window to the next start.

        Contributors appear only as their keyed pseudonyms (hex).
        """
        zones = []
        for zone, per_index in self._zones.items():
            stats = [[idx, s.n, s.total, s.lo, s.hi, s.last_time, s.last_value] for idx, s in per_index.items()]
            zones.append([zone, stats, sorted(c.hex() for c in self._contributors.get(zone, ()))])
        return {"v": 1, "combine": self.combine, "k": self.k, "length": self.length, "zones": zones}

    @classmethod
    def from_state(cls, state: Any) -> "WindowAccumulator":
        """Rebuild from :meth:`to_state`; anything malformed is a ValueError."""
        try:
            if state["v"] != 1:
                raise ValueError(f"unknown window state version {state['v']!r}")
            acc = cls(state["combine"], state["k"], state["length"])
            for zone, stats, contributors in state["zones"]:
                if isinstance(zone, list):
                    raise ValueError("zone must be a scalar")
                per_index = acc._zones.setdefault(zone, {})
                for idx, n, total, lo, hi, last_time, last_value in stats:
                    ints = (n, total, last_time, last_value) + tuple(v for v in (idx, lo, hi) if v is not None)
                    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
                        raise ValueError("window state holds a non-integer")
                    per_index[idx] = _Stats(n, total, lo, hi, last_time, last_value)
                if contributors:
                    acc._contributors[zone] = {bytes.fromhex(c) for c in contributors}
            return acc
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed window state: {exc!r}") from None

    def _fold(self, s: _Stats) -> int:
        if self.combine == "sum":
            return s.total
        if self.combine == "count":
            return s.n
        if self.combine == "min":
            return int(s.lo)  # type: ignore[arg-type]
        if self.combine == "max":
            return int(s.hi)  # type: ignore[arg-type]
        if self.combine == "last":
            return s.last_value
        if self.combine == "mean":
            return s.total // s.n
        raise ValueError(f"unknown combine {self.combine!r}")
