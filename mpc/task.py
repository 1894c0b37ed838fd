"""Task definition: the public, validated document all parties agree on.

A task names what is measured, which scheme aggregates it, which aggregators
take part (endpoint and HPKE config each, leader first), the collector's
HPKE config, the time windows, ``min_batch_size`` and the DP block.  It is
loaded from JSON or TOML; unknown keys and bad values raise `InvalidTask`
naming the key.  Byte fields are base64url (unpadded), as in DAP.

Secrets (the VDAF verify key, aggregators' HPKE private keys) are not part
of the task document; each aggregator keeps them in its own store.
"""

from __future__ import annotations

import base64
import json
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from twinmpc.crypto.seal import HpkeConfig
from twinmpc.mpc.dp import DpParams
from twinmpc.mpc.errors import DecodeError, InvalidTask
from twinmpc.mpc.measurements import MeasurementType, measurement_from_params
from twinmpc.mpc.masks.noise import check_dp
from twinmpc.mpc.masks.params import MasksParams, check_measurement
from twinmpc.mpc.output_policy import OutputPolicy
from twinmpc.mpc.schemes import scheme_for

TASK_ID_SIZE = 32
MODES = ("shares", "paillier", "ckks", "masks")
SCHEMES = ("twinring64", "prio3", "prio3-multiproof")  # multiproof: Field64 SumVec, 3 proofs (draft 7.4.3 + 9)
_KEYS = {
    "task_id",
    "measurement",
    "vdaf",
    "mode",
    "aggregators",
    "collector_hpke_config",
    "window_seconds",
    "min_batch_size",
    "max_skew_seconds",
    "dp",
    "he_public_key",
    "description",
    "max_collections_per_window",
    "output",
    "he_max_reports",
    "he_retired_keys",
    "masks",
    "report_expiry_seconds",
    "retention_seconds",
}
# Data of a window is kept this long after it ends unless the task says otherwise: the report
# expiry (replay records must outlive it) plus a day in which the window can still be collected.
RETENTION_MARGIN_SECONDS = 86_400
_REQUIRED = {"task_id", "measurement", "aggregators", "window_seconds", "min_batch_size"}


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidTask(f"{what} must be a base64url string")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError) as exc:
        raise InvalidTask(f"{what} is not valid base64url") from exc
    if b64encode(raw) != text.rstrip("="):  # '+', '/', stray bits: one text per value
        raise InvalidTask(f"{what} is not canonical base64url")
    return raw


@dataclass(frozen=True)
class AggregatorEndpoint:
    """One aggregator of a task: where it listens and how to seal to it."""

    endpoint: str
    hpke_config: HpkeConfig | None
    identity: str | None = None  # certificate identity: helpers accept job RPCs only from the leader's

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoint": self.endpoint}
        if self.hpke_config is not None:
            out["hpke_config"] = b64encode(self.hpke_config.encode())
        if self.identity is not None:
            out["identity"] = self.identity
        return out


def _int_field(doc: dict, key: str, low: int, high: int, default: int | None = None) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidTask(f"{key!r} must be an integer in {low}..{high}, got {value!r}")
    return value


def _hpke(text: Any, what: str) -> HpkeConfig:
    try:
        return HpkeConfig.decode(b64decode(text, what))
    except (DecodeError, ValueError) as exc:
        raise InvalidTask(f"{what}: {exc}") from exc


@dataclass(frozen=True)
class Task:
    task_id: bytes
    measurement: MeasurementType
    aggregators: tuple[AggregatorEndpoint, ...]
    window_seconds: int
    min_batch_size: int
    vdaf: str = "prio3"
    mode: str = "shares"
    collector_hpke_config: HpkeConfig | None = None
    max_skew_seconds: int = 60
    report_expiry_seconds: int = 86_400
    dp: dict[str, Any] = field(default_factory=lambda: {"algo": "none"})
    he_public_key: bytes | None = None
    description: str = ""
    max_collections_per_window: int = 1
    output: OutputPolicy = field(default_factory=OutputPolicy)
    he_max_reports: int = 100_000
    he_retired_keys: tuple[bytes, ...] = ()
    masks: MasksParams | None = None  # mode "masks" only: dropout tolerance, neighbours, deadlines
    retention_seconds: int | None = None  # None: report expiry + RETENTION_MARGIN_SECONDS (see `retention`)

    def __post_init__(self) -> None:
        if len(self.task_id) != TASK_ID_SIZE:
            raise InvalidTask(f"task_id must be {TASK_ID_SIZE} bytes")
        if self.mode not in MODES:
            raise InvalidTask(f"'mode' must be one of {MODES}, got {self.mode!r}")
        if self.vdaf not in SCHEMES:
            raise InvalidTask(f"'vdaf' must be one of {SCHEMES}, got {self.vdaf!r}")
        if self.mode == "shares":
            if len(self.aggregators) < 2:
                raise InvalidTask("mode 'shares' needs at least 2 aggregators")
            if any(a.hpke_config is None for a in self.aggregators):
                raise InvalidTask("mode 'shares' needs an hpke_config for every aggregator")
            if self.collector_hpke_config is None:
                raise InvalidTask("mode 'shares' needs 'collector_hpke_config'")
        elif self.mode == "masks":
            _check_masks(self)
        elif self.he_public_key is None:
            raise InvalidTask(f"mode {self.mode!r} needs 'he_public_key'")
        if not self.aggregators:
            raise InvalidTask("a task needs at least one aggregator")
        if self.retention_seconds is not None and self.retention_seconds < self.report_expiry_seconds:
            # a report id may be forgotten only once the report would be refused by its time
            raise InvalidTask(f"'retention_seconds' ({self.retention_seconds}) must be at least 'report_expiry_seconds' ({self.report_expiry_seconds})")
        if self.mode == "shares":
            self.scheme  # noqa: B018 - build the scheme now so a bad combination is refused at load

    # --- loading -----------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Task:
        if not isinstance(doc, dict):
            raise InvalidTask("task document must be a JSON object / TOML table")
        unknown = set(doc) - _KEYS
        if unknown:
            raise InvalidTask(f"unknown task key(s): {sorted(unknown)}")
        missing = _REQUIRED - set(doc)
        if missing:
            raise InvalidTask(f"missing task key(s): {sorted(missing)}")
        aggs = doc["aggregators"]
        if not isinstance(aggs, list) or not all(isinstance(a, dict) for a in aggs):
            raise InvalidTask("'aggregators' must be a list of tables")
        endpoints = []
        for i, a in enumerate(aggs):
            extra = set(a) - {"endpoint", "hpke_config", "identity"}
            if extra:
                raise InvalidTask(f"aggregators[{i}]: unknown key(s) {sorted(extra)}")
            if not isinstance(a.get("endpoint"), str) or not a["endpoint"]:
                raise InvalidTask(f"aggregators[{i}].endpoint must be a non-empty string")
            config = _hpke(a["hpke_config"], f"aggregators[{i}].hpke_config") if "hpke_config" in a else None
            identity = a.get("identity")
            if identity is not None and (not isinstance(identity, str) or not identity):
                raise InvalidTask(f"aggregators[{i}].identity must be a non-empty string")
            endpoints.append(AggregatorEndpoint(a["endpoint"], config, identity))
        dp = doc.get("dp", {"algo": "none"})
        if not isinstance(dp, dict):
            raise InvalidTask("'dp' must be a table such as {\"algo\": \"discrete-gaussian\", \"epsilon\": 1.0}")
        return cls(
            task_id=_task_id(doc["task_id"]),
            measurement=measurement_from_params(doc["measurement"]),
            aggregators=tuple(endpoints),
            window_seconds=_int_field(doc, "window_seconds", 1, 366 * 86400),
            min_batch_size=_int_field(doc, "min_batch_size", 1, 1 << 40),
            vdaf=doc.get("vdaf", _default_scheme(doc["measurement"])),
            mode=doc.get("mode", "shares"),
            collector_hpke_config=_hpke(doc["collector_hpke_config"], "collector_hpke_config")
            if "collector_hpke_config" in doc
            else None,
            max_skew_seconds=_int_field(doc, "max_skew_seconds", 0, 86400, 60),
            report_expiry_seconds=_int_field(doc, "report_expiry_seconds", 1, 90 * 86400, 86_400),
            retention_seconds=_int_field(doc, "retention_seconds", 1, 3660 * 86400) if "retention_seconds" in doc else None,
            dp=dict(dp),
            he_public_key=b64decode(doc["he_public_key"], "he_public_key") if "he_public_key" in doc else None,
            description=str(doc.get("description", "")),
            max_collections_per_window=_int_field(doc, "max_collections_per_window", 1, 1000, 1),
            output=OutputPolicy.from_dict(doc.get("output", {})),
            he_max_reports=_int_field(doc, "he_max_reports", 1, 1 << 32, 100_000),
            he_retired_keys=_retired_keys(doc.get("he_retired_keys", [])),
            masks=MasksParams.from_dict(doc.get("masks", {})) if doc.get("mode") == "masks" else _no_masks(doc),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Task:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InvalidTask(f"task document is not valid JSON: {exc}") from exc

    @classmethod
    def from_toml(cls, path: str | Path) -> Task:
        try:
            return cls.from_dict(tomllib.loads(Path(path).read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise InvalidTask(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task_id": b64encode(self.task_id),
            "measurement": self.measurement.params(),
            "vdaf": self.vdaf,
            "mode": self.mode,
            "aggregators": [a.to_dict() for a in self.aggregators],
            "window_seconds": self.window_seconds,
            "min_batch_size": self.min_batch_size,
            "max_skew_seconds": self.max_skew_seconds,
            "report_expiry_seconds": self.report_expiry_seconds,
            "dp": self.dp,
        }
        if self.collector_hpke_config is not None:
            out["collector_hpke_config"] = b64encode(self.collector_hpke_config.encode())
        if self.he_public_key is not None:
            out["he_public_key"] = b64encode(self.he_public_key)
        if self.description:
            out["description"] = self.description
        out["max_collections_per_window"] = self.max_collections_per_window
        out["output"] = self.output.to_dict()
        if self.mode != "shares":
            out["he_max_reports"] = self.he_max_reports
        if self.masks is not None:
            out["masks"] = self.masks.to_dict()
        if self.he_retired_keys:
            out["he_retired_keys"] = [b64encode(k) for k in self.he_retired_keys]
        if self.retention_seconds is not None:
            out["retention_seconds"] = self.retention_seconds
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    # --- derived -------------------------------------------------------------
    @property
    def task_id_b64(self) -> str:
        return b64encode(self.task_id)

    @property
    def num_aggregators(self) -> int:
        return len(self.aggregators)

    def ctx(self) -> bytes:
        """VDAF application context string: binds every proof to this task."""
        return b"twinmpc/v1/task/" + self.task_id

    def window_start(self, t: int) -> int:
        """Start (unix seconds) of the time-interval window containing t."""
        return t - t % self.window_seconds

    @property
    def retention(self) -> int:
        """Seconds a window's data is kept after it ends (reports, replay records, released results)."""
        return self.report_expiry_seconds + RETENTION_MARGIN_SECONDS if self.retention_seconds is None else self.retention_seconds

    def expired_before(self, now: float) -> int:
        """Windows starting before this have ended more than `retention` seconds ago: their data may go.

        Every report of such a window is older than the report expiry, so an upload of it is
        refused by its time and its id no longer needs a replay record.
        """
        return self.window_start(int(now) - self.retention)

    @cached_property
    def scheme(self):
        """The aggregation scheme instance (VDAF) this task uses in mode 'shares'."""
        return scheme_for(self.vdaf, self.measurement, self.num_aggregators)


def _check_masks(task: Task) -> None:
    """One aggregator sums masked inputs; the collector's HPKE key receives the window's sum."""
    if len(task.aggregators) != 1:
        raise InvalidTask("mode 'masks' runs on exactly one aggregator")
    if task.collector_hpke_config is None:
        raise InvalidTask("mode 'masks' needs 'collector_hpke_config'")
    if task.he_public_key is not None or task.he_retired_keys:
        raise InvalidTask("mode 'masks' takes no 'he_public_key'")
    if task.masks is None:
        object.__setattr__(task, "masks", MasksParams())
    check_dp(DpParams.from_dict(task.dp))
    check_measurement(task.measurement.NAME)


def _no_masks(doc: dict[str, Any]) -> None:
    if "masks" in doc:
        raise InvalidTask("'masks' parameters need mode 'masks'")
    return None


def _retired_keys(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise InvalidTask("'he_retired_keys' must be a list of base64url public keys")
    return tuple(b64decode(v, f"he_retired_keys[{i}]") for i, v in enumerate(value))


def _default_scheme(measurement: Any) -> str:
    """Prio3 (validity proofs); fixed-point vectors without an L2 bound have no Prio3 variant."""
    if isinstance(measurement, dict) and measurement.get("type") == "fixedpointvec" and "l2_bound" not in measurement:
        return "twinring64"
    return "prio3"


def _task_id(text: Any) -> bytes:
    raw = b64decode(text, "task_id")
    if len(raw) != TASK_ID_SIZE:
        raise InvalidTask(f"task_id must decode to {TASK_ID_SIZE} bytes, got {len(raw)}")
    return raw
