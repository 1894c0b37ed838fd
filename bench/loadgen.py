"""Load generator: many simulated edge nodes in their own process (asyncio).

Started by bench.runner as ``python -m twinmpc.bench.loadgen PLAN.json``, so the
edge-side CPU (encode, shard, HPKE seal) competes with the aggregator
processes for the machine as it would not in-process.  Protocol on the
pipes (plain text lines, nothing pickled):

    loadgen -> runner   "ready"                once imports and channels are up
    runner  -> loadgen  "go <first window>"    aligned window start (unix seconds)
    loadgen -> runner   "done <window start>"  every upload of that window settled
    loadgen             writes the result JSON to plan["out"] and exits 0

Each edge node takes its readings of a window at evenly spaced instants (a
random phase per node) in the first ``send_fraction`` of the window, shards
and seals each one (`mpc.client.shard_report`), and uploads when it holds
``upload_batch`` readings or its last reading of the window.  A transport
failure is retried with backoff (the outbox behaviour of services.edge); on a
retry, REPLAYED means an earlier attempt was stored, so it counts as
delivered.  Per window the generator keeps the exact sum of every
acknowledged reading, so the runner can check the collected result.

Chaos driven from here: ``drop_edges`` (a fraction of the nodes goes silent
mid-window), ``replay_storm`` (acknowledged reports sent again: every one must
come back REPLAYED), ``malformed_storm`` (broken reports, bench.chaos
.MALFORMED_KINDS: each must get its expected status and never be counted).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from twinmpc.bench.chaos import MALFORMED_KINDS, malformed_report
from twinmpc.bench.scenario import LOADGEN_TYPES
from twinmpc.mpc.client import shard_report
from twinmpc.mpc.measurements import measurement_from_params
from twinmpc.mpc.report import Report
from twinmpc.mpc.task import Task
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.client import report_to_proto
from twinmpc.services.pki import channel_credentials

RETRY_FOR_SECONDS = 20.0
# what an edge outbox retries: transport trouble (a cut TLS stream can surface as INTERNAL) and rate limiting
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                       grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED})
STORM_BATCH = 100


def measurement_sampler(params: dict[str, Any]):
    """(draw(rng) -> measurement, contribution(measurement) -> int64 vector) for a type."""
    m = measurement_from_params(params)
    kind = params["type"]
    if kind == "count":
        return (lambda rng: int(rng.integers(0, 2))), (lambda x: np.array([x], dtype=np.int64)), 1
    if kind == "sum":
        top = 1 << m.bits
        return (lambda rng: int(rng.integers(0, top))), (lambda x: np.array([x], dtype=np.int64)), 1
    if kind == "histogram":
        n = m.length

        def onehot(x: int) -> np.ndarray:
            v = np.zeros(n, dtype=np.int64)
            v[x] = 1
            return v

        return (lambda rng: int(rng.integers(0, n))), onehot, n
    if kind == "sumvec":
        top, n = 1 << m.bits, m.length
        return (lambda rng: rng.integers(0, top, size=n, dtype=np.uint64)), (lambda x: x.astype(np.int64)), n
    raise ValueError(f"the load generator drives {LOADGEN_TYPES}, not {kind!r}")


def node_schedule(n_nodes: int, per_window: int, span: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Offsets (seconds into the window) of each node's readings: even spacing, random phase."""
    base, extra = divmod(per_window, n_nodes)
    out = []
    for n in range(n_nodes):
        count = base + (1 if n < extra else 0)
        if count == 0:
            out.append(np.zeros(0))
            continue
        period = span / count
        out.append(rng.uniform(0, period) + period * np.arange(count))
    return out


class LoadGenerator:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.task = Task.from_json(plan["task_json"])
        self.draw, self.contribution, self.length = measurement_sampler(plan["measurement"])
        creds = channel_credentials(Path(plan["cert"]), Path(plan["key"]), Path(plan["ca"]))
        opts = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
        self.channels = [grpc.aio.secure_channel(plan["endpoint"], creds, options=opts) for _ in range(plan["connections"])]
        self.stubs = [pb_grpc.UploadStub(c) for c in self.channels]
        self.records: list[tuple] = []  # (window idx, taken, edge_s, sealed, acked or nan, status)
        self.acked_reports: list[Report] = []
        self.expected: list[np.ndarray] = []
        self.acked: list[int] = []
        self.refused: list[Counter] = []
        self.storms: dict[str, Any] = {}
        self.errors: list[str] = []

    async def connect(self) -> None:
        await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 30) for c in self.channels))

    async def close(self) -> None:
        for c in self.channels:
            await c.close()

    async def _send(self, stub: pb_grpc.UploadStub, messages: list[pb.Report]) -> list[str]:
        """One batched upload with retries; statuses in order ('REPLAYED' on a retry -> delivered)."""
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        attempt, backoff = 0, 0.05
        while True:
            try:
                resp = await stub.UploadReports(iter([pb.UploadBatch(task_id=self.task.task_id, reports=messages)]), timeout=10)
            except grpc.aio.AioRpcError as exc:
                if time.monotonic() > deadline or exc.code() not in RETRYABLE:
                    self.errors.append(f"upload failed for good: {exc.code().name}: {exc.details()}")
                    return ["FAILED"] * len(messages)
                attempt += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            statuses = [pb.ReportStatus.Name(o.status) for o in resp.outcomes]
            if attempt:
                statuses = ["DELIVERED_ON_RETRY" if s == "REPLAYED" else s for s in statuses]
            return statuses

    async def _node_window(self, node: int, wi: int, w_start: float, offsets: np.ndarray, rng: np.random.Generator, silent_after: float | None) -> None:
        stub = self.stubs[node % len(self.stubs)]
        batch: list[tuple[Report, Any, float, float, float]] = []
        last = len(offsets) - 1
        for i, off in enumerate(offsets):
            planned = w_start + float(off)
            if silent_after is not None and planned >= silent_after:
                break
            await asyncio.sleep(max(0.0, planned - time.time()))
            taken = time.time()
            x = self.draw(rng)
            t0 = time.perf_counter()
            report = shard_report(self.task, x, time=int(planned))
            edge_s = time.perf_counter() - t0
            batch.append((report, x, taken, edge_s, time.time()))
            if len(batch) >= self.plan["upload_batch"] or i == last:
                await self._flush(stub, wi, batch)
                batch = []
        if batch:
            await self._flush(stub, wi, batch)

    async def _flush(self, stub: pb_grpc.UploadStub, wi: int, batch: list) -> None:
        statuses = await self._send(stub, [report_to_proto(r) for r, *_ in batch])
        acked_at = time.time()
        for (report, x, taken, edge_s, sealed), status in zip(batch, statuses, strict=True):
            ok = status in ("ACCEPTED", "DELIVERED_ON_RETRY")
            self.records.append((wi, taken, edge_s, sealed, acked_at if ok else math.nan, status))
            if ok:
                self.expected[wi] += self.contribution(x)
                self.acked[wi] += 1
                self.acked_reports.append(report)
            else:
                self.refused[wi][status] += 1

    async def _replay_storm(self, at: float, count: int) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        pool = list(self.acked_reports)
        if not pool:
            self.errors.append("replay storm: nothing acknowledged yet to replay")
            return
        picks = [pool[i % len(pool)] for i in range(count)]
        statuses: Counter = Counter()
        for i in range(0, count, STORM_BATCH):
            for s in await self._send(self.stubs[0], [report_to_proto(r) for r in picks[i : i + STORM_BATCH]]):
                statuses[s] += 1
        self.storms["replay"] = {"sent": count, "statuses": dict(statuses)}

    async def _malformed_storm(self, at: float, count: int, w_start: int, rng: random.Random) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        kinds = list(MALFORMED_KINDS)
        msgs, sent_kinds = [], []
        for i in range(count):
            kind = kinds[i % len(kinds)]
            valid = shard_report(self.task, self.draw(np.random.default_rng(i)), time=w_start + 1)
            fields = malformed_report(kind, valid.report_id, valid.time, valid.public_share, list(valid.sealed_shares), rng)
            msgs.append(pb.Report(**fields))
            sent_kinds.append(kind)
        by_kind: dict[str, Counter] = {k: Counter() for k in kinds}
        for i in range(0, count, STORM_BATCH):
            for kind, s in zip(sent_kinds[i : i + STORM_BATCH], await self._send(self.stubs[0], msgs[i : i + STORM_BATCH]), strict=True):
                by_kind[kind][s] += 1
        self.storms["malformed"] = {"sent": count, "statuses": {k: dict(v) for k, v in by_kind.items()}}

    async def run(self, first_window: int) -> None:
        p = self.plan
        ws = p["window_seconds"]
        span = ws * p["send_fraction"]
        rng = np.random.default_rng(p["seed"])
        node_rngs = [np.random.default_rng([p["seed"], n]) for n in range(p["edge_nodes"])]
        chaos_rng = random.Random(p["seed"])
        drop = p.get("drop_edges")
        for wi in range(p["windows"]):
            w_start = first_window + wi * ws
            self.expected.append(np.zeros(self.length, dtype=np.int64))
            self.acked.append(0)
            self.refused.append(Counter())
            offsets = node_schedule(p["edge_nodes"], p["reports_per_window"], span, rng)
            silent: set[int] = set()
            if drop:
                silent = set(chaos_rng.sample(range(p["edge_nodes"]), round(drop["fraction"] * p["edge_nodes"])))
            silent_after = w_start + drop["at"] * ws if drop else None
            jobs = [
                self._node_window(n, wi, w_start, offsets[n], node_rngs[n], silent_after if n in silent else None)
                for n in range(p["edge_nodes"])
            ]
            if p.get("replay_storm") and wi == 0:
                jobs.append(self._replay_storm(w_start + p["replay_storm"]["at"] * ws, p["replay_storm"]["count"]))
            if p.get("malformed_storm") and wi == 0:
                jobs.append(self._malformed_storm(w_start + p["malformed_storm"]["at"] * ws, p["malformed_storm"]["count"], w_start, chaos_rng))
            await asyncio.gather(*jobs)
            print(f"done {w_start}", flush=True)

    def result(self, first_window: int) -> dict[str, Any]:
        rec = self.records
        return {
            "windows": [
                {
                    "start": first_window + i * self.plan["window_seconds"],
                    "acked": self.acked[i],
                    "expected": [int(v) for v in self.expected[i]],
                    "refused": dict(self.refused[i]),
                }
                for i in range(len(self.acked))
            ],
            "reports": {
                "window": [r[0] for r in rec],
                "taken": [r[1] for r in rec],
                "edge_s": [r[2] for r in rec],
                "sealed": [r[3] for r in rec],
                "acked": [None if math.isnan(r[4]) else r[4] for r in rec],
                "status": [r[5] for r in rec],
            },
            "storms": self.storms,
            "errors": self.errors,
        }


async def _main(plan: dict[str, Any]) -> None:
    gen = LoadGenerator(plan)
    try:
        await gen.connect()
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        word, _, value = line.strip().partition(" ")
        if word != "go":
            raise SystemExit(f"loadgen: expected 'go <window>', got {line!r}")
        first = int(value)
        await gen.run(first)
    finally:
        await gen.close()
    Path(plan["out"]).write_text(json.dumps(gen.result(first)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m twinmpc.bench.loadgen PLAN.json", file=sys.stderr)
        return 2
    plan = json.loads(Path(args[0]).read_text())
    asyncio.run(_main(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
