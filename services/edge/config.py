"""Edge agent configuration: a validated TOML document.

Config is data (STYLE 16): every table is a frozen pydantic model with
``extra="forbid"``, so an unknown key, an unknown rule or a bad parameter is an
:class:`EdgeConfigError` whose message names the file, the line and the rule
index (``edge.toml:42: streams[0].rules[2] ...``).  Secrets (the MQTT password)
come only from a file with tight permissions or from the environment, and are
redacted in ``repr``.

A rule may be written as a TOML table or, for blocks copied from a task
document, as a string holding one JSON object, e.g.
``'{"rule": "clip", "field": "count", "min": 0, "max": 50}'``.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from twinmpc.mpc.errors import TwinMpcError
from twinmpc.services.listen import ListenAddress

__all__ = [
    "BucketRule",
    "ClipRule",
    "CoarsenTimeRule",
    "DropRule",
    "EdgeConfig",
    "EdgeConfigError",
    "KeepRule",
    "LocalNoiseRule",
    "MeasurementMap",
    "MqttConfig",
    "OutboxConfig",
    "QuantizeRule",
    "Rule",
    "StreamConfig",
    "SuppressBelowKRule",
    "TlsConfig",
    "UploadConfig",
    "ZoneRule",
    "load_edge_config",
    "parse_edge_config",
]


class EdgeConfigError(TwinMpcError, ValueError):
    """The edge configuration was rejected; the message names the line and the rule."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


FieldName = Annotated[str, Field(min_length=1, max_length=128)]
Number = Union[int, float]


def _finite(value: Number, what: str) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be finite")
    return value


# ---------------------------------------------------------------------------
# Pipeline rules (applied in order to each reading; see services/edge/pipeline.py)
# ---------------------------------------------------------------------------


class DropRule(_Model):
    """Remove fields (PII such as plates, MACs, face embeddings) if present."""

    rule: Literal["drop"]
    fields: list[FieldName] = Field(min_length=1)


class KeepRule(_Model):
    """Keep only the listed fields (allow-list); everything else is removed."""

    rule: Literal["keep"]
    fields: list[FieldName] = Field(min_length=1)


class CoarsenTimeRule(_Model):
    """Replace a timestamp field by the start of the task window that contains it."""

    rule: Literal["coarsen_time"]
    field: FieldName = "ts"


class ZoneRule(_Model):
    """Replace lat/lon by the id of a rows x cols grid cell over a bounding box.

    Cell id = row * cols + col, an integer in [0, rows*cols) that can index a
    histogram bucket or a SumVec coordinate.  Points outside the box are rejected.
    """

    rule: Literal["zone"]
    lat: FieldName = "lat"
    lon: FieldName = "lon"
    into: FieldName = "zone"
    lat_min: float = Field(ge=-90.0, le=90.0)
    lat_max: float = Field(ge=-90.0, le=90.0)
    lon_min: float = Field(ge=-180.0, le=180.0)
    lon_max: float = Field(ge=-180.0, le=180.0)
    rows: int = Field(ge=1, le=1 << 16)
    cols: int = Field(ge=1, le=1 << 16)

    @model_validator(mode="after")
    def _box(self) -> "ZoneRule":
        if not (self.lat_min < self.lat_max and self.lon_min < self.lon_max):
            raise ValueError("bounding box needs lat_min < lat_max and lon_min < lon_max")
        return self


class BucketRule(_Model):
    """Replace a value by its bucket index: bisect_right(edges, value), len(edges)+1 buckets."""

    rule: Literal["bucket"]
    field: FieldName
    edges: list[Number] = Field(min_length=1)
    into: FieldName | None = None

    @field_validator("edges")
    @classmethod
    def _increasing(cls, edges: list[Number]) -> list[Number]:
        for e in edges:
            _finite(e, "edge")
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("edges must be strictly increasing")
        return edges


class QuantizeRule(_Model):
    """Replace a value by floor(value / step), an integer count of steps."""

    rule: Literal["quantize"]
    field: FieldName
    step: Number = Field(gt=0)
    into: FieldName | None = None

    @field_validator("step")
    @classmethod
    def _step_finite(cls, step: Number) -> Number:
        return _finite(step, "step")


class ClipRule(_Model):
    """Clamp a numeric field to [min, max] (bounds the contribution of one reading)."""

    rule: Literal["clip"]
    field: FieldName
    min: Number
    max: Number

    @model_validator(mode="after")
    def _bounds(self) -> "ClipRule":
        _finite(self.min, "min")
        _finite(self.max, "max")
        if self.min > self.max:
            raise ValueError("clip needs min <= max")
        return self


class SuppressBelowKRule(_Model):
    """Drop, at window close, every zone with fewer than k distinct contributors.

    Per reading the contributor field (e.g. a device MAC) is replaced by a keyed
    pseudonym held only in memory for the window, so the raw identifier never
    reaches the outbox.
    """

    rule: Literal["suppress_below_k"]
    zone: FieldName = "zone"
    contributor: FieldName
    k: int = Field(ge=2, le=1 << 20)


def _exact(value: Any, what: str) -> Fraction:
    """A DP parameter as an exact rational: 0.1 means 1/10, not the nearest double."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number or a decimal string")
    try:
        q = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{what} is not a number") from None
    if q <= 0:
        raise ValueError(f"{what} must be > 0")
    return q


class LocalNoiseRule(_Model):
    """Local DP: add exact discrete noise to the node's window measurement (then clamp).

    ``discrete_laplace``: scale = sensitivity / epsilon, epsilon-DP per window
    (CKS20 Algorithm 2).  ``discrete_gaussian``: sigma^2 = sensitivity^2 / (2 rho),
    rho-zCDP per window (CKS20 Algorithm 3, Theorem 14).  ``sensitivity`` is
    how much one contributor can move the window measurement (after clipping).
    A window-level rule: it must be the last rule of the stream.
    """

    rule: Literal["local_noise"]
    mechanism: Literal["discrete_laplace", "discrete_gaussian"]
    sensitivity: int = Field(ge=1, le=1 << 40)
    epsilon: Fraction | None = None
    rho: Fraction | None = None

    @field_validator("epsilon", "rho", mode="before")
    @classmethod
    def _rational(cls, value: Any, info: Any) -> Fraction | None:
        return None if value is None else _exact(value, info.field_name)

    @model_validator(mode="after")
    def _params(self) -> "LocalNoiseRule":
        if self.mechanism == "discrete_laplace" and (self.epsilon is None or self.rho is not None):
            raise ValueError("discrete_laplace takes epsilon (and no rho)")
        if self.mechanism == "discrete_gaussian" and (self.rho is None or self.epsilon is not None):
            raise ValueError("discrete_gaussian takes rho (and no epsilon)")
        return self

    def scale(self) -> Fraction:
        """Laplace scale t/s or Gaussian sigma^2, exact."""
        if self.epsilon is not None:
            return Fraction(self.sensitivity) / self.epsilon
        return Fraction(self.sensitivity**2) / (2 * self.rho)  # type: ignore[operator]


Rule = Annotated[
    Union[
        DropRule, KeepRule, CoarsenTimeRule, ZoneRule, BucketRule, QuantizeRule, ClipRule, SuppressBelowKRule, LocalNoiseRule
    ],
    Field(discriminator="rule"),
]

RULE_NAMES = ("drop", "keep", "coarsen_time", "zone", "bucket", "quantize", "clip", "suppress_below_k", "local_noise")


class MeasurementMap(_Model):
    """How a window's minimised readings become the task's one measurement.

    ``field`` holds the integer value of each reading; ``combine`` folds the
    readings of a window into one scalar; for vector tasks (SumVec) ``index``
    names the field giving the coordinate each reading adds to.
    """

    field: FieldName
    combine: Literal["sum", "count", "min", "max", "last", "mean"] = "sum"
    index: FieldName | None = None


def _removed_after(rules: list[Any], name: str) -> str | None:
    """Which rule (if any) statically removes ``name`` before the measurement is read."""
    present: bool | None = None  # None: unknown (raw field), True: known present
    culprit: str | None = None
    for i, r in enumerate(rules):
        if isinstance(r, DropRule) and name in r.fields:
            present, culprit = False, f"rules[{i}] (drop)"
        elif isinstance(r, KeepRule) and name not in r.fields:
            present, culprit = False, f"rules[{i}] (keep)"
        elif isinstance(r, ZoneRule):
            if name in (r.lat, r.lon) and name != r.into:
                present, culprit = False, f"rules[{i}] (zone)"
            elif name == r.into:
                present = True
        elif isinstance(r, SuppressBelowKRule) and name == r.contributor:
            present, culprit = False, f"rules[{i}] (suppress_below_k)"
        elif isinstance(r, (BucketRule, QuantizeRule)) and name == (r.into or r.field):
            present = True
    return culprit if present is False else None


class StreamConfig(_Model):
    """One MQTT stream feeding one task: topics -> rules -> measurement."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    topics: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(min_length=1)
    task: Annotated[str, Field(min_length=1)]
    time_field: FieldName = "ts"
    max_skew_seconds: int = Field(default=300, ge=0, le=86400)
    grace_seconds: int = Field(default=2, ge=0, le=3600)
    rules: list[Rule] = Field(default_factory=list)
    measurement: MeasurementMap

    @field_validator("rules", mode="before")
    @classmethod
    def _json_rules(cls, rules: Any) -> Any:
        if not isinstance(rules, list):
            return rules
        out = []
        for i, r in enumerate(rules):
            if isinstance(r, str):
                try:
                    r = json.loads(r, parse_constant=_reject_constant)
                except ValueError as e:
                    raise ValueError(f"rules[{i}]: inline JSON does not parse: {e}") from None
                if not isinstance(r, dict):
                    raise ValueError(f"rules[{i}]: inline JSON must be an object")
            out.append(r)
        return out

    @model_validator(mode="after")
    def _fields_survive(self) -> "StreamConfig":
        for name in filter(None, (self.measurement.field, self.measurement.index)):
            culprit = _removed_after(self.rules, name)
            if culprit is not None:
                raise ValueError(f"measurement field {name!r} is removed by {culprit}")
        noise = [i for i, r in enumerate(self.rules) if isinstance(r, LocalNoiseRule)]
        if noise and noise != [len(self.rules) - 1]:
            raise ValueError(f"local_noise acts on the window measurement: one rule, the last one (found at {noise})")
        suppress = [i for i, r in enumerate(self.rules) if isinstance(r, SuppressBelowKRule)]
        if len(suppress) > 1:
            raise ValueError(f"at most one suppress_below_k rule per stream (rules {suppress})")
        for i, r in enumerate(self.rules):
            if isinstance(r, SuppressBelowKRule) and _removed_after(self.rules[:i], r.zone) is not None:
                raise ValueError(f"rules[{i}]: zone field {r.zone!r} is removed before suppress_below_k")
        return self


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# ---------------------------------------------------------------------------
# Transport, outbox, upload
# ---------------------------------------------------------------------------


class TlsConfig(_Model):
    """TLS towards the broker; a client certificate when the broker requires one."""

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> "TlsConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(_Model):
    """Broker connection; the password only from a 0600 file or an environment variable."""

    host: Annotated[str, Field(min_length=1)]
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    qos: Literal[0, 1, 2] = 1
    keepalive: int = Field(default=30, ge=5, le=3600)
    max_payload_bytes: int = Field(default=65536, ge=64, le=1 << 24)
    reconnect_initial_seconds: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _password(self) -> "MqttConfig":
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        if (self.password_file or self.password_env) and self.username is None:
            raise ValueError("a password needs a username")
        return self

    def password(self, base: Path) -> SecretStr | None:
        """Read the password now (not at parse time), refusing a group/world-readable file."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise EdgeConfigError(f"mqtt.password_env: environment variable {self.password_env} is not set")
            return SecretStr(value)
        if self.password_file is not None:
            path = _resolve(base, self.password_file)
            try:
                mode = path.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise EdgeConfigError(f"mqtt.password_file {path}: permissions {oct(mode & 0o777)}, need 0600")
                return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))
            except OSError as e:
                raise EdgeConfigError(f"mqtt.password_file {path}: cannot read: {e.strerror}") from None
        return None


class OutboxConfig(_Model):
    """Durable store-and-forward queue; see docs/edge.md for the full policy."""

    dir: Annotated[str, Field(min_length=1)]
    max_reports: int = Field(default=10_000, ge=1, le=10_000_000)
    batch_size: int = Field(default=64, ge=1, le=10_000)
    retry_initial_seconds: float = Field(default=0.5, gt=0, le=3600)
    retry_max_seconds: float = Field(default=300.0, gt=0, le=86400)
    ledger_retention_seconds: int = Field(default=7 * 86400, ge=60)
    tick_seconds: float = Field(default=0.2, gt=0, le=60)

    @model_validator(mode="after")
    def _retry(self) -> "OutboxConfig":
        if self.retry_initial_seconds > self.retry_max_seconds:
            raise ValueError("retry_initial_seconds must not exceed retry_max_seconds")
        return self


class UploadConfig(_Model):
    """Where reports go (the tasks' leader) and the node's mTLS identity (role ``edge``)."""

    leader: Annotated[str, Field(min_length=1)]
    ca_file: str
    cert_file: str
    key_file: str
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)


class EdgeConfig(_Model):
    """The whole edge node: identity, broker, outbox, upload target and streams."""

    node_id: Annotated[str, Field(min_length=1, max_length=128)]
    mqtt: MqttConfig
    outbox: OutboxConfig
    upload: UploadConfig | None = None
    metrics_listen: ListenAddress | None = None  # "127.0.0.1:9465": Prometheus GET /metrics (plain HTTP: loopback or monitoring network)
    streams: list[StreamConfig] = Field(min_length=1)
    base_dir: str = Field(default=".", exclude=True)

    @model_validator(mode="after")
    def _unique_streams(self) -> "EdgeConfig":
        names = [s.name for s in self.streams]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate stream names {dup}")
        return self

    def path(self, relative: str) -> Path:
        """Resolve a path from the config relative to the config file's directory."""
        return _resolve(Path(self.base_dir), relative)


def _resolve(base: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else base / path


# ---------------------------------------------------------------------------
# Loading, with errors that name the line
# ---------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\s]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")
_RULE_ITEM = re.compile(r"""["']?\brule["']?\s*[:=]""")
_ITEM_IN_MSG = re.compile(r"rules\[(\d+)\]: inline JSON")
_TOML_LINE = re.compile(r"at line (\d+)")


def _header_lines(text: str) -> list[tuple[tuple[Any, ...], int, int]]:
    """Map each TOML table header to (concrete path with array indices, first line, last line).

    ``[[a.b]]`` appends to the array ``b`` of the last element of ``a``, as TOML
    1.0 defines, so ``loc`` tuples from pydantic (``("streams", 0, "rules", 2)``)
    can be matched against header paths.
    """
    counts: dict[tuple[str, ...], int] = {}  # abstract array path -> index of its last element
    found: list[tuple[tuple[Any, ...], int]] = []
    lines = text.splitlines()
    for n, line in enumerate(lines, start=1):
        m = _HEADER.match(line)
        if not m:
            continue
        parts = tuple(p.strip() for p in m.group(2).split("."))
        is_array = m.group(1) == "[["
        concrete: list[Any] = []
        for depth, p in enumerate(parts, start=1):
            concrete.append(p)
            abstract = parts[:depth]
            if depth == len(parts) and is_array:
                counts[abstract] = counts.get(abstract, -1) + 1
                for k in [k for k in counts if len(k) > depth and k[:depth] == abstract]:
                    del counts[k]
                concrete.append(counts[abstract])
            elif abstract in counts:
                concrete.append(counts[abstract])
        found.append((tuple(concrete), n))
    return [
        (key, start, found[i + 1][1] - 1 if i + 1 < len(found) else len(lines))
        for i, (key, start) in enumerate(found)
    ]


def _locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a pydantic error location in the TOML source."""
    lines = text.splitlines()
    headers = _header_lines(text)
    best: tuple[tuple[Any, ...], int, int] | None = None
    for key, start, end in headers:
        if loc[: len(key)] == key and (best is None or len(key) > len(best[0])):
            best = (key, start, end)
    start, end, depth = (best[1], best[2], len(best[0])) if best else (1, len(lines), 0)
    if best is None:
        end = headers[0][1] - 1 if headers else len(lines)
    key = loc[depth] if depth < len(loc) else "rule" if loc and loc[-2:-1] == ("rules",) else None
    if isinstance(key, str):
        for n in range(start, end + 1):
            m = _KEY.match(lines[n - 1])
            if m and m.group(1) == key:
                item = loc[depth + 1] if depth + 1 < len(loc) else None
                if key == "rules" and isinstance(item, int):
                    # Inline array of rules: the line holding the item-th rule.
                    hits = [i for i in range(n, end + 1) if _RULE_ITEM.search(lines[i - 1])]
                    if item < len(hits):
                        return hits[item]
                return n
    return start if best else None


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _explain(raw: Any, loc: tuple[Any, ...], msg: str) -> tuple[tuple[Any, ...], str]:
    """Trim pydantic's union noise from a location and name the rule kind."""
    clean: list[Any] = []
    for part in loc:
        if isinstance(part, str) and part in RULE_NAMES and clean and isinstance(clean[-1], int):
            continue  # discriminator tag pydantic inserts for the union member
        clean.append(part)
    loc = tuple(clean)
    if "rules" in loc:
        i = loc.index("rules")
        if i + 1 < len(loc) and isinstance(loc[i + 1], int):
            node: Any = raw
            for part in loc[: i + 2]:
                try:
                    node = node[part]
                except (KeyError, IndexError, TypeError):
                    node = None
                    break
            if isinstance(node, str):
                try:
                    node = json.loads(node)
                except ValueError:
                    node = None
            kind = node.get("rule") if isinstance(node, dict) else None
            if "does not match any of the expected tags" in msg or "Unable to extract tag" in msg:
                msg = f"unknown rule {kind!r} (known rules: {', '.join(RULE_NAMES)})"
            elif kind is not None:
                msg = f"rule {kind!r}: {msg}"
    return loc, msg


def parse_edge_config(text: str, *, source: str = "<edge config>", base_dir: str | Path = ".") -> EdgeConfig:
    """Parse and validate an edge config from TOML text (no file access)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_LINE.search(str(e))
        where = f"{source}:{m.group(1)}" if m else source
        raise EdgeConfigError(f"{where}: TOML syntax error: {e}") from None
    raw_with_base = dict(raw)
    raw_with_base["base_dir"] = str(base_dir)
    try:
        return EdgeConfig.model_validate(raw_with_base)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            loc, msg = _explain(raw, tuple(err["loc"]), err["msg"])
            item = _ITEM_IN_MSG.search(msg)
            if item and loc and loc[-1] == "rules":
                loc = loc + (int(item.group(1)),)
            line = _locate(text, loc)
            where = f"{source}:{line}" if line is not None else source
            problems.append(f"{where}: {_fmt_loc(loc) or '(top level)'}: {msg}")
        raise EdgeConfigError("; ".join(problems)) from None


def load_edge_config(path: str | os.PathLike[str]) -> EdgeConfig:
    """Load ``edge.toml``; relative paths inside it resolve against its directory."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise EdgeConfigError(f"{p}: cannot read: {e.strerror}") from None
    return parse_edge_config(text, source=str(p), base_dir=p.resolve().parent)
