"""Benchmark scenarios as data: typed, unknown keys rejected, parsed from TOML.

A scenario file (``bench/scenarios/*.toml``) says what load to drive through a
real K-aggregator deployment on loopback, which network faults to put on one
link, which chaos runs follow, which peers to compare against, and the
latency budget of every pipeline stage.  ``python -m twinmpc.bench.runner --scenario
FILE`` runs one; ``--quick`` and ``--full`` pick the two shipped profiles.

Stages (milliseconds per report unless noted):

* ``edge``: encode + shard + seal one reading (load generator process);
* ``upload``: reading sealed -> leader acknowledged it (durable);
* ``aggregate``: acknowledged -> counted in the leader's window accumulator
  (open + verify with the helpers + accumulate);
* ``collect``: window close -> the controller holds the sealed aggregate
  shares (per window);
* ``unshard``: open the K aggregate shares and combine (per window);
* ``end_to_end``: a reading taken at the instant its window closes:
  edge + upload + collect + unshard (per report, composed).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from twinmpc.mpc.dp import DpParams
from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.measurements import measurement_from_params

# measurement types whose exact sum the load generator tracks (bench.loadgen.measurement_sampler)
LOADGEN_TYPES = ("count", "sum", "histogram", "sumvec")
STAGES = ("edge", "upload", "aggregate", "collect", "unshard", "end_to_end")
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Workload(_Strict):
    edge_nodes: int = Field(ge=1, le=1_000_000)
    reports_per_window: int = Field(ge=1, le=10_000_000)
    windows: int = Field(ge=1, le=100)
    window_seconds: int = Field(ge=2, le=3600)
    measurement: dict[str, Any]
    vdaf: Literal["twinring64", "prio3"] = "twinring64"
    aggregators: int = Field(2, ge=2, le=5)
    # processes serving the leader's port (the aggregator's `workers` setting)
    leader_workers: int = Field(1, ge=1, le=64)
    # readings an edge node buffers before one upload RPC (1 = one RPC per reading)
    upload_batch: int = Field(1, ge=1, le=10_000)
    # gRPC channels the load generator shares among its simulated edge nodes
    connections: int = Field(8, ge=1, le=1024)
    # readings are taken during the first `send_fraction` of each window
    send_fraction: float = Field(0.8, gt=0, le=1)
    # the task's DP block for the main run (chaos runs stay exact so they can be checked exactly)
    dp: dict[str, Any] = {"algo": "none"}
    seed: int = 1

    @field_validator("dp")
    @classmethod
    def _known_dp(cls, value: dict[str, Any]) -> dict[str, Any]:
        DpParams.from_dict(value)  # raises InvalidTask naming the key
        return value

    @field_validator("measurement")
    @classmethod
    def _known_measurement(cls, value: dict[str, Any]) -> dict[str, Any]:
        measurement_from_params(value)  # raises InvalidTask naming the key
        if value["type"] not in LOADGEN_TYPES:
            raise ValueError(f"the load generator drives {LOADGEN_TYPES}, not {value['type']!r}")
        return value


class LinkFaults(_Strict):
    """Faults a TCP proxy injects on one loopback link (see bench.chaos.FaultProxy)."""

    link: Literal["none", "leader-helper", "edge-leader"] = "none"
    delay_ms: float = Field(0.0, ge=0, le=10_000)
    # per forwarded chunk: probability of a TCP retransmission stall of `rto_ms`
    loss: float = Field(0.0, ge=0, lt=1)
    rto_ms: float = Field(200.0, ge=0, le=10_000)
    # per forwarded chunk: probability that the connection is cut (both sides)
    reset: float = Field(0.0, ge=0, lt=1)


class StageBudget(_Strict):
    p50_ms: float | None = Field(None, gt=0)
    p99_ms: float = Field(gt=0)


class Budgets(_Strict):
    edge: StageBudget
    upload: StageBudget
    aggregate: StageBudget
    collect: StageBudget
    unshard: StageBudget
    end_to_end: StageBudget
    min_ingest_per_s: float = Field(0.0, ge=0)


class KillRestart(_Strict):
    action: Literal["kill_restart"]
    target: int = Field(1, ge=0)
    at: float = Field(0.4, ge=0, lt=1)  # fraction of the window
    down_seconds: float = Field(1.0, gt=0, le=60)


class DropEdges(_Strict):
    action: Literal["drop_edges"]
    fraction: float = Field(0.2, gt=0, lt=1)
    at: float = Field(0.3, ge=0, lt=1)


class LinkFault(_Strict):
    action: Literal["link_fault"]
    faults: LinkFaults


class ReplayStorm(_Strict):
    action: Literal["replay_storm"]
    count: int = Field(500, ge=1, le=1_000_000)
    at: float = Field(0.5, ge=0, lt=1)


class MalformedStorm(_Strict):
    action: Literal["malformed_storm"]
    count: int = Field(500, ge=1, le=1_000_000)
    at: float = Field(0.5, ge=0, lt=1)


Chaos = Annotated[KillRestart | DropEdges | LinkFault | ReplayStorm | MalformedStorm, Field(discriminator="action")]


class Peers(_Strict):
    enabled: bool = True
    reports: int = Field(50, ge=2, le=100_000)
    dimension: int = Field(4, ge=1, le=100_000)
    bits: int = Field(16, ge=1, le=32)
    paillier_bits: int = Field(2048, ge=1024, le=4096)
    secagg_neighbors: int = Field(0, ge=0)  # 0: 2*ceil(log2 n), SecAgg+'s choice
    mpyc_parties: int = Field(3, ge=1, le=7)
    repeats: int = Field(3, ge=1, le=20)  # rounds; each time is the median over them


class Scenario(_Strict):
    name: str
    description: str = ""
    workload: Workload
    network: LinkFaults = LinkFaults()
    budgets: Budgets
    chaos: list[Chaos] = []
    peers: Peers = Peers(enabled=False)

    def check_targets(self) -> None:
        for c in self.chaos:
            if isinstance(c, KillRestart) and c.target >= self.workload.aggregators:
                raise ScenarioError(f"chaos kill_restart target {c.target} outside 0..{self.workload.aggregators - 1}")


class ScenarioError(InvalidTask):
    """A scenario file failed validation; the message names the key."""


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate scenario TOML; unknown keys raise ScenarioError."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: {exc}") from exc
    try:
        scenario = Scenario.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ScenarioError(f"{source}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc
    except InvalidTask as exc:
        raise ScenarioError(f"{source}: {exc}") from exc
    scenario.check_targets()
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    return parse_scenario(text, str(path))
