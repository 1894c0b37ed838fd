"""Micro-benchmark of the core protocol, with the homomorphic peers in the same run.

Per measurement type, dimension d in {1, 1k, 100k} and K in {2, 3} it times,
per report (in process, no network):

* ``shard``: client `shard_report` (validate, encode, share, seal K shares);
* ``open``: one aggregator's HPKE open of its input share (mean over the K);
* ``verify``: the verification round for one report: K `verify_init` (PRG
  expansion of helper seeds), the leader's message, K `verify_finish`;
* ``accumulate``: one aggregator's `Accumulator.add` of one output share
  (the sum, the count and the report-id checksum);
* ``unshard``: per collection: K `seal_aggregate_share` + collector `unshard`;

and the deterministic cost: bytes per report (encoded) and per sealed share.
In the same run it times the same workloads through the peers:

* `phe` Paillier-2048 (gmpy2-backed) encryption of one scalar;
* TenSEAL CKKS (crypto.ckks default parameters, N = 8192) encryption of d = 10k;
* a bare numpy uint64 in-place add of d = 100k;

and checks the budgets that justify sharing over homomorphic encryption (exit
status 1 when one is missed): an edge cabinet's sealed report must cost far less
to produce than the encryption it replaces, and summing shares must run at the
speed of a plain array add:

* Paillier encrypt / sealed scalar report (count, K=2)        >= 50
* CKKS encrypt d=10k / our report d=10k (fixedpointvec, K=2)  >= 25
* accumulate d=100k / bare numpy add d=100k                   <= 2

Times are per operation, the median over ``--repeats`` batches (each batch
sized to run ~``--batch-seconds``), on the process CPU-time clock by default
(``--clock cpu``: the box is shared with other jobs, and CPU time does not count
the time other processes hold the core; threads of this process, e.g. SEAL's,
are counted); ``--clock wall`` uses wall time.  For the ratios, the peer and our
operation run in alternating batches (same machine load for both; the box is
shared) and the ratio is the median of the per-pair ratios.

    python -m twinmpc.bench.bench_core --out bench/out/core.json
    python -m twinmpc.bench.bench_core --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc import aggregator as agg
from twinmpc.mpc import collector
from twinmpc.mpc.client import shard_report
from twinmpc.mpc.report import Report
from twinmpc.mpc.task import Task, b64encode

PAILLIER_RATIO_BUDGET = 50.0
CKKS_RATIO_BUDGET = 25.0
ACCUMULATE_RATIO_BUDGET = 2.0
T0 = 1_700_000_000


def measurement_for(kind: str, d: int) -> tuple[dict[str, Any], Any]:
    """Task measurement block and one valid measurement of dimension d."""
    rng = np.random.default_rng(d)
    if kind == "count":
        return {"type": "count"}, 1
    if kind == "sum":
        return {"type": "sum", "bits": 16}, 12345
    if kind == "mean":
        return {"type": "mean", "bits": 16}, 321
    if kind == "histogram":
        return {"type": "histogram", "buckets": d}, d // 2
    if kind == "sumvec":
        return {"type": "sumvec", "length": d, "bits": 16}, rng.integers(0, 1 << 16, size=d, dtype=np.uint64)
    if kind == "fixedpointvec":
        return {"type": "fixedpointvec", "length": d, "frac_bits": 20, "clip": 4.0}, rng.uniform(-4.0, 4.0, size=d)
    raise ValueError(kind)


def build_task(measurement: dict[str, Any], k: int) -> tuple[Task, list[HpkeKeypair], HpkeKeypair]:
    agg_keys = [HpkeKeypair.generate(j) for j in range(k)]
    collector_key = HpkeKeypair.generate(0)
    doc = {
        "task_id": b64encode(os.urandom(32)),
        "measurement": measurement,
        "vdaf": "twinring64",
        "aggregators": [{"endpoint": f"agg{j}:443", "hpke_config": b64encode(kp.config.encode())} for j, kp in enumerate(agg_keys)],
        "collector_hpke_config": b64encode(collector_key.config.encode()),
        "window_seconds": 300,
        "min_batch_size": 1,
    }
    return Task.from_dict(doc), agg_keys, collector_key


def calibrate(fn: Callable[[], Any], batch_seconds: float) -> int:
    """Calls per batch so that one batch runs about `batch_seconds`."""
    fn()  # warm-up (caches, first-call allocations)
    n = 1
    while True:
        elapsed = timed_batch(fn, n)
        if elapsed >= batch_seconds / 4 or n >= 1 << 16:
            return max(1, int(n * batch_seconds / max(elapsed, 1e-9)))
        n *= 4


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = CLOCKS["cpu"]


def timed_batch(fn: Callable[[], Any], n: int) -> float:
    """Seconds for n calls on the selected clock (process CPU time by default)."""
    start = _clock()
    for _ in range(n):
        fn()
    return _clock() - start


def per_op(fn: Callable[[], Any], repeats: int, batch_seconds: float) -> dict[str, float]:
    """Seconds per call: median/min over `repeats` batches."""
    n = calibrate(fn, batch_seconds)
    samples = [timed_batch(fn, n) / n for _ in range(repeats)]
    return {"median_s": statistics.median(samples), "min_s": min(samples), "calls_per_batch": n}


def paired(peer: Callable[[], Any], ours: Callable[[], Any], repeats: int, batch_seconds: float) -> dict[str, float]:
    """Peer and our operation timed in alternating batches, so both see the same machine load.

    The ratio is the median of 3 x `repeats` per-pair ratios peer/ours over
    quarter-length batches; the machine is shared, and load that slows one
    batch mostly slows its partner batch alike.
    """
    # short batches, many pairs: load changes on a shared box are slower than one pair
    n_peer, n_ours = calibrate(peer, batch_seconds / 4), calibrate(ours, batch_seconds / 4)
    peer_s, ours_s, ratios = [], [], []
    for _ in range(3 * repeats):
        p = timed_batch(peer, n_peer) / n_peer
        o = timed_batch(ours, n_ours) / n_ours
        peer_s.append(p)
        ours_s.append(o)
        ratios.append(p / o)
    return {
        "peer_us": round(statistics.median(peer_s) * 1e6, 2),
        "ours_us": round(statistics.median(ours_s) * 1e6, 2),
        "ratio": round(statistics.median(ratios), 2),
        "ratio_min": round(min(ratios), 2),
        "ratio_max": round(max(ratios), 2),
        "pairs": 3 * repeats,
    }


def bench_workload(kind: str, d: int, k: int, repeats: int, batch_seconds: float) -> dict[str, Any]:
    params, m = measurement_for(kind, d)
    task, agg_keys, collector_key = build_task(params, k)
    report = shard_report(task, m, time=T0)
    shares = [agg.open_input_share(task, kp, j, report) for j, kp in enumerate(agg_keys)]

    def verify_round() -> list[np.ndarray]:
        inits = [agg.verify_init(task, b"", j, report.report_id, report.public_share, s) for j, s in enumerate(shares)]
        message = agg.verifier_message(task, [v for _, v in inits])
        return [agg.verify_finish(task, state, message) for state, _ in inits]

    outs = verify_round()
    accs = [agg.Accumulator(task) for _ in range(k)]
    opener = iter(range(1 << 62))

    def open_one() -> bytes:
        j = next(opener) % k
        return agg.open_input_share(task, agg_keys[j], j, report)

    def accumulate_one() -> None:  # one aggregator (each runs on its own machine)
        accs[k - 1].add([report.report_id], [outs[k - 1]])

    window = task.window_start(T0)
    batch = [agg.Accumulator(task) for _ in range(k)]  # a one-report window per aggregator
    for j, a in enumerate(batch):
        a.add([report.report_id], [outs[j]])

    def unshard() -> Any:
        sealed = [agg.seal_aggregate_share(task, window, j, a, a.agg_share) for j, a in enumerate(batch)]
        return collector.unshard(task, collector_key, window, 1, batch[0].checksum, sealed)

    timings = {
        "shard": per_op(lambda: shard_report(task, m, time=T0), repeats, batch_seconds),
        "open": per_op(open_one, repeats, batch_seconds),
        "verify": per_op(verify_round, repeats, batch_seconds),
        "accumulate": per_op(accumulate_one, repeats, batch_seconds),
        "unshard": per_op(unshard, repeats, batch_seconds),
    }
    expected = task.measurement.decode(task.measurement.encode(m), 1)
    if unshard().result != expected:
        raise RuntimeError(f"{kind} d={d} K={k}: the benchmarked round does not reproduce the measurement")
    encoded = report.encode()
    if Report.decode(encoded) != report:
        raise RuntimeError("report encoding does not round-trip")
    return {
        "type": kind,
        "d": d,
        "k": k,
        "us": {stage: round(t["median_s"] * 1e6, 2) for stage, t in timings.items()},
        "us_min": {stage: round(t["min_s"] * 1e6, 2) for stage, t in timings.items()},
        "bytes_per_report": len(encoded),
        "bytes_per_sealed_share": [len(s) for s in report.sealed_shares],
        "bytes_plain_input_shares": [len(s) for s in shares],
    }


def bench_paillier(repeats: int, batch_seconds: float) -> dict[str, Any]:
    """phe Paillier-2048 encryption of one scalar vs our sealed count report for K = 2."""
    from phe import paillier, util

    public, _ = paillier.generate_paillier_keypair(n_length=2048)
    params, m = measurement_for("count", 1)
    task, _, _ = build_task(params, 2)
    result = paired(lambda: public.encrypt(12345), lambda: shard_report(task, m, time=T0), repeats, batch_seconds)
    ct = public.encrypt(12345)
    return {"gmpy2": bool(util.HAVE_GMP), "ciphertext_bytes": (ct.ciphertext(be_secure=False).bit_length() + 7) // 8, **result}


def bench_ckks(d: int, repeats: int, batch_seconds: float) -> dict[str, Any]:
    """TenSEAL CKKS encryption of a d-vector (crypto.ckks defaults) vs our fixedpointvec report, K = 2."""
    from twinmpc.crypto import ckks

    public = ckks.generate_context().public
    params, m = measurement_for("fixedpointvec", d)
    task, _, _ = build_task(params, 2)
    result = paired(lambda: public.encrypt(m), lambda: shard_report(task, m, time=T0), repeats, batch_seconds)
    chunks = public.encrypt(m)
    return {
        "d": d,
        "poly_modulus_degree": public.params.poly_modulus_degree,
        "chunks": len(chunks),
        "ciphertext_bytes": len(ckks.encode_ciphertext(public, chunks, d)),
        "our_report_bytes": len(shard_report(task, m, time=T0).encode()),
        **result,
    }


def bench_numpy_add(d: int, repeats: int, batch_seconds: float) -> dict[str, Any]:
    """Bare in-place numpy uint64 add vs one aggregator's Accumulator.add of a d-vector output share."""
    params, m = measurement_for("sumvec", d)
    task, agg_keys, _ = build_task(params, 2)
    report = shard_report(task, m, time=T0)
    share = agg.open_input_share(task, agg_keys[1], 1, report)
    state, verifier = agg.verify_init(task, b"", 1, report.report_id, report.public_share, share)
    out = agg.verify_finish(task, state, agg.verifier_message(task, [verifier, verifier]))
    acc = agg.Accumulator(task)
    a = np.zeros(d, dtype=np.uint64)
    b = out.copy()
    result = paired(lambda: acc.add([report.report_id], [out]), lambda: np.add(a, b, out=a), repeats, batch_seconds)
    # paired() divides peer by ours: here the "peer" is our accumulate, so the ratio reads accumulate / numpy
    return {"d": d, "accumulate_us": result["peer_us"], "numpy_add_us": result["ours_us"], "ratio": result["ratio"],
            "ratio_min": result["ratio_min"], "ratio_max": result["ratio_max"], "pairs": result["pairs"]}


def workloads(quick: bool) -> list[tuple[str, int]]:
    scalar = [("count", 1), ("sum", 1), ("mean", 1)]
    dims = [1, 1000, 100_000]
    vectors = [(kind, d) for kind in ("histogram", "sumvec", "fixedpointvec") for d in dims]
    if quick:
        vectors = [(kind, d) for kind, d in vectors if kind != "histogram" or d == 1000]
    return scalar + vectors + [("fixedpointvec", 10_000)]


def run(quick: bool, repeats: int, batch_seconds: float) -> dict[str, Any]:
    results = []
    for kind, d in workloads(quick):
        for k in (2, 3):
            if quick and d == 10_000 and k == 3:
                continue
            results.append(bench_workload(kind, d, k, repeats, batch_seconds))
            print(f"  {kind:>14} d={d:<6} K={k}: " + ", ".join(f"{s} {v:.1f}us" for s, v in results[-1]["us"].items()), file=sys.stderr)
    peers = {
        "paillier_2048": bench_paillier(repeats, max(batch_seconds, 0.1)),
        "ckks_d10k": bench_ckks(10_000, repeats, max(batch_seconds, 0.1)),
        "accumulate_vs_numpy_add_d100k": bench_numpy_add(100_000, repeats, batch_seconds),
    }
    print(f"  peers: {json.dumps(peers)}", file=sys.stderr)
    ratios = {
        "paillier_encrypt_over_sealed_scalar_report_k2": {
            "value": peers["paillier_2048"]["ratio"],
            "budget": f">= {PAILLIER_RATIO_BUDGET}",
            "ok": peers["paillier_2048"]["ratio"] >= PAILLIER_RATIO_BUDGET,
        },
        "ckks_encrypt_over_report_d10k_k2": {
            "value": peers["ckks_d10k"]["ratio"],
            "budget": f">= {CKKS_RATIO_BUDGET}",
            "ok": peers["ckks_d10k"]["ratio"] >= CKKS_RATIO_BUDGET,
        },
        "accumulate_d100k_over_numpy_add": {
            "value": peers["accumulate_vs_numpy_add_d100k"]["ratio"],
            "budget": f"<= {ACCUMULATE_RATIO_BUDGET}",
            "ok": peers["accumulate_vs_numpy_add_d100k"]["ratio"] <= ACCUMULATE_RATIO_BUDGET,
        },
    }
    return {
        "benchmark": "bench_core",
        "quick": quick,
        "repeats": repeats,
        "batch_seconds": batch_seconds,
        "statistic": "median seconds per operation over repeats (us_min: best batch); ratios: median of interleaved pairs",
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(), "platform": platform.platform()},
        "workloads": results,
        "peers": peers,
        "ratios": ratios,
        "budgets_met": all(r["ok"] for r in ratios.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer workloads and shorter batches (about a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="timed batches per measurement (default 7, quick 5)")
    parser.add_argument("--batch-seconds", type=float, default=None, help="target length of one batch (default 0.2, quick 0.05)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time (default) or wall time")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    repeats = args.repeats or (5 if args.quick else 7)
    batch_seconds = args.batch_seconds or (0.05 if args.quick else 0.2)
    result = run(args.quick, repeats, batch_seconds)
    result["clock"] = args.clock
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for name, r in result["ratios"].items():
        status = "ok" if r["ok"] else "MISSED"
        print(f"{name}: {r['value']} (budget {r['budget']}) {status}", file=sys.stderr)
    return 0 if result["budgets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
