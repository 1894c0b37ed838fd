"""Benchmark of mpc.prio3 (draft-irtf-cfrg-vdaf-18): shard and verification per type and size.

For each case, with 2 aggregators, in one process and one run:

* ``single``: one report at a time — client `shard`; both aggregators'
  `verify_init`, the leader's `verifier_shares_to_message`, both `verify_next`;
* ``deployed``: how the services run it — a client or gateway shards a batch
  (`shard_batch`), the aggregators verify an aggregation job's reports together
  (`verify_init_batch`, `verifier_shares_to_message_batch`, then `verify_next`);
  per-report cost over ``--batch-size`` reports (fewer for the long cases);
* ``draft``: bench/prio3_draft_baseline.py, a straightforward pure-Python
  transcription of the draft (field objects, Lagrange-basis helpers, gadget
  wrappers; its times match the draft's own reference code quoted in issue 6
  within ~25 %), shard + verification on the same inputs and randomness, with
  a check that it produces the same bytes.

Ratios are measured in this run: ``speedup_single`` and ``speedup_deployed``
are the draft transcription's time over ours.  Two further figures are quoted,
not measured (issue 6): the draft reference's own times (shown next to our
transcription's) and libprio-rs's shard times (Count ~14 us, SumVec(100) ~45 us).

The federated-learning rows (full run only): SumVec(100000, max 255) on
Field128 and the Field64 multiproof variant (3 proofs): single-report shard
and verification, the batched shard of ``--fl-batch`` reports per report, and
the peak memory per report of a whole batch (client ``shard_batch``, both
aggregators' ``verify_init_batch``, the leader's message, ``verify_next``),
traced with tracemalloc, minus the report's own encoded size (public share +
input shares).  The field kernel in use (native C or the numpy reference,
``TWINMPC_FIELD_KERNEL``) is recorded in the report.

Budgets (exit status 1 when one is missed; printed either way):

* Histogram(100): shard + verification < 1 ms (deployed)
* Histogram(100): single-report shard + verification >= 40x faster than the draft transcription
* SumVec(100000): shard <= 200 ms, verification (both aggregators) <= 40 ms, peak memory per
  report in a batch <= 5 MB beyond the report itself; batched shard no slower than single
* SumVec(1000, max 255, chunk 89): shard + verification < 40 ms (single report)
* deployed speed-up over the draft transcription >= 20x (every case it runs)
* shard within 10x of libprio-rs (Count, SumVec(100); deployed batch shard)
* batched verification costs at most half of report-by-report (circuits shorter than 1,000 elements)
* every batch and the draft transcription give the same bytes as `shard` / `verify_init`

Times are medians over ``--repeats`` runs after one warm-up, taken in three blocks of
runs, the lowest block median kept (robust to other processes' bursts on a shared machine).

    python -m twinmpc.bench.bench_prio3                 # full run, JSON on stdout
    python -m twinmpc.bench.bench_prio3 --quick         # fewer repeats, no SumVec(100000) rows
    python -m twinmpc.bench.bench_prio3 --out bench/out/prio3.json
    python -m twinmpc.bench.bench_prio3 --fl-only      # only the two SumVec(100000) rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from twinmpc.bench import prio3_draft_baseline as draft
from twinmpc.crypto.field_native import KERNEL_ENV, kernel_enabled, prover_threads
from twinmpc.mpc.prio3 import Prio3Count, Prio3Histogram, Prio3Sum, Prio3SumVec, Prio3SumVecWithMultiproof
from twinmpc.mpc.prio3.prio3 import Prio3

CTX = b"twinmpc bench"
VERIFY_KEY = bytes(range(32))

# Quoted in issue 6, not measured here: the draft's Python reference code
# (shard + both aggregators' verification, 2-core machine), in ms.
QUOTED_DRAFT_REFERENCE_MS = {
    "Count": 0.57,
    "Sum(max=255)": 3.5,
    "Sum(max=2^32-1)": 37.0,
    "Histogram(100,chunk=10)": 19.6,
    "Histogram(1000,chunk=32)": 144.0,
    "SumVec(1000,max=255,chunk=89)": 761.0,
}
# Quoted in issue 6, not measured here: libprio-rs shard time, in microseconds.
QUOTED_LIBPRIO_SHARD_US = {"Count": 14.0, "SumVec(100,max=1,chunk=10)": 45.0}
SPEEDUP_BUDGET = 20.0
LIBPRIO_FACTOR_BUDGET = 10.0
BATCH_RATIO_BUDGET = 0.5
# Batching removes per-call overhead, which dominates short circuits; long ones are vectorised per report already.
BATCH_RATIO_MAX_MEAS_LEN = 1000
SINGLE_SPEEDUP_BUDGET = 40.0  # Histogram(100), one report at a time, over the draft transcription
FL_CASE = "SumVec(100000,max=255,chunk=894)"
FL_SHARD_MS_BUDGET = 200.0
FL_VERIFY_MS_BUDGET = 40.0
FL_MEMORY_MB_BUDGET = 5.0


BLOCKS = 3


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median of `repeats` timed runs, taken per block of runs; the lowest block median is kept.

    On a shared 2-core machine another process's burst can double every run of one
    block; the lowest block median is the time the code takes when it has its core.
    """
    fn()  # warm-up (caches of twiddles, DSTs)
    per_block = max(1, repeats // BLOCKS)
    best = float("inf")
    for _ in range(BLOCKS if repeats >= BLOCKS else 1):
        times = []
        for _ in range(per_block if repeats >= BLOCKS else repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best = min(best, statistics.median(times))
    return best * 1e3


def _cases(quick: bool, fl_only: bool = False) -> list[dict[str, Any]]:
    cases = [] if fl_only else [
        {"name": "Count", "vdaf": lambda: Prio3Count(2), "meas": 1, "draft": lambda: draft.Count()},
        {"name": "Sum(max=255)", "vdaf": lambda: Prio3Sum(2, 255), "meas": 200, "draft": lambda: draft.Sum(255)},
        {"name": "Sum(max=2^32-1)", "vdaf": lambda: Prio3Sum(2, 2**32 - 1), "meas": 123456789,
         "draft": lambda: draft.Sum(2**32 - 1)},
        {"name": "Histogram(10,chunk=3)", "vdaf": lambda: Prio3Histogram(2, 10, 3), "meas": 7,
         "draft": lambda: draft.Histogram(10, 3)},
        {"name": "Histogram(100,chunk=10)", "vdaf": lambda: Prio3Histogram(2, 100, 10), "meas": 42,
         "draft": lambda: draft.Histogram(100, 10)},
        {"name": "Histogram(1000,chunk=32)", "vdaf": lambda: Prio3Histogram(2, 1000, 32), "meas": 999,
         "draft": lambda: draft.Histogram(1000, 32), "batch": 200},
        {"name": "SumVec(100,max=1,chunk=10)", "vdaf": lambda: Prio3SumVec(2, 100, 1, 10),
         "meas": [i % 2 for i in range(100)], "draft": lambda: draft.SumVec(100, 1, 10)},
        {"name": "SumVec(1000,max=255,chunk=89)", "vdaf": lambda: Prio3SumVec(2, 1000, 255, 89),
         "meas": [i % 256 for i in range(1000)], "draft": lambda: draft.SumVec(1000, 255, 89), "batch": 40},
        {"name": "SumVecWithMultiproof(1000,max=255,chunk=89)", "vdaf": lambda: Prio3SumVecWithMultiproof(2, 1000, 255, 89),
         "meas": [i % 256 for i in range(1000)], "batch": 40},
    ]
    if fl_only or not quick:
        fl = [i % 256 for i in range(100000)]
        cases.append({"name": FL_CASE, "vdaf": lambda: Prio3SumVec(2, 100000, 255, 894), "meas": fl, "repeats": 5,
                      "fl_batch": True})
        cases.append({"name": "SumVecWithMultiproof(100000,max=255,chunk=894)",
                      "vdaf": lambda: Prio3SumVecWithMultiproof(2, 100000, 255, 894), "meas": fl, "repeats": 5,
                      "fl_batch": True})
    return cases


def _fl_batch(vdaf: Prio3[Any, Any], meas: Any, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Long circuits in a batch of n: batched shard per report, and the peak memory per report of
    the whole deployed path (traced), minus the report's own encoded size."""
    nonces = [rng.bytes(16) for _ in range(n)]
    rands = [rng.bytes(vdaf.RAND_SIZE) for _ in range(n)]
    measurements = [meas] * n
    shard_ms = _median_ms(lambda: vdaf.shard_batch(CTX, measurements, nonces, rands), 3) / n
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sharded = vdaf.shard_batch(CTX, measurements, nonces, rands)
        _verify_batch(vdaf, nonces, [p for p, _ in sharded], [[s[j] for _, s in sharded] for j in range(2)])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    report_bytes = len(sharded[0][0]) + sum(len(x) for x in sharded[0][1])
    return {
        "batch_reports": n,
        "shard_ms_per_report": round(shard_ms, 2),
        "report_bytes": report_bytes,
        "peak_mb_per_report": round(peak / n / 1e6, 2),
        "peak_mb_per_report_beyond_report": round((peak / n - report_bytes) / 1e6, 2),
    }


def _verify_single(vdaf: Prio3[Any, Any], nonce: bytes, public: bytes, inputs: list[bytes]) -> list[bytes]:
    inits = [vdaf.verify_init(VERIFY_KEY, CTX, j, b"", nonce, public, inputs[j]) for j in range(2)]
    msg = vdaf.verifier_shares_to_message(CTX, b"", [v for _, v in inits])
    for state, _ in inits:
        vdaf.verify_next(CTX, state, msg)
    return [msg] + [v for _, v in inits]


def _verify_batch(vdaf: Prio3[Any, Any], nonces: list[bytes], publics: list[bytes], inputs: list[list[bytes]]) -> list[list[bytes]]:
    inits = [vdaf.verify_init_batch(VERIFY_KEY, CTX, j, b"", nonces, publics, inputs[j]) for j in range(2)]
    msgs = vdaf.verifier_shares_to_message_batch(CTX, b"", [[inits[0][b][1], inits[1][b][1]] for b in range(len(nonces))])
    out = []
    for b, msg in enumerate(msgs):
        for j in range(2):
            vdaf.verify_next(CTX, inits[j][b][0], msg)
        out.append([msg, inits[0][b][1], inits[1][b][1]])
    return out


def run_case(case: dict[str, Any], repeats: int, batch_size: int, fl_batch: int = 4) -> dict[str, Any]:
    vdaf: Prio3[Any, Any] = case["vdaf"]()
    meas = case["meas"]
    rng = np.random.default_rng(1)
    nonce = rng.bytes(16)
    rand = rng.bytes(vdaf.RAND_SIZE)
    reps = case.get("repeats", repeats)

    public, inputs = vdaf.shard(CTX, meas, nonce, rand)
    single_verify_bytes = _verify_single(vdaf, nonce, public, inputs)
    shard_ms = _median_ms(lambda: vdaf.shard(CTX, meas, nonce, rand), reps)
    verify_ms = _median_ms(lambda: _verify_single(vdaf, nonce, public, inputs), reps)
    row: dict[str, Any] = {
        "case": case["name"],
        "field": vdaf.field.NAME,
        "field_backend": vdaf.field.__name__,
        "single": {"shard_ms": round(shard_ms, 4), "verify_both_ms": round(verify_ms, 4),
                   "total_ms": round(shard_ms + verify_ms, 4)},
        "bytes": {
            "public_share": len(public),
            "leader_input_share": len(inputs[0]),
            "helper_input_share": len(inputs[1]),
            "verifier_share": len(single_verify_bytes[1]),
            "proof_len_elements": vdaf.flp.PROOF_LEN,
            "meas_len_elements": vdaf.flp.MEAS_LEN,
        },
    }

    if case.get("fl_batch"):
        row["fl_batch"] = _fl_batch(vdaf, meas, fl_batch, rng)
        row["fl_batch"]["batched_vs_single_shard"] = round(row["fl_batch"]["shard_ms_per_report"] / shard_ms, 3)
    if "draft" in case or "batch" in case:  # the deployed (batched) path, per report
        n = case.get("batch", batch_size)
        nonces = [rng.bytes(16) for _ in range(n)]
        rands = [rng.bytes(vdaf.RAND_SIZE) for _ in range(n)]
        nonces[0], rands[0] = nonce, rand
        measurements = [meas] * n
        sharded = vdaf.shard_batch(CTX, measurements, nonces, rands)
        publics = [p for p, _ in sharded]
        batch_inputs = [[s[j] for _, s in sharded] for j in range(2)]
        verified = _verify_batch(vdaf, nonces, publics, batch_inputs)
        batch_reps = max(3, reps // 5)
        shard_b = _median_ms(lambda: vdaf.shard_batch(CTX, measurements, nonces, rands), batch_reps) * 1e3 / n
        verify_b = _median_ms(lambda: _verify_batch(vdaf, nonces, publics, batch_inputs), batch_reps) * 1e3 / n
        row["deployed"] = {
            "batch_reports": n,
            "shard_us": round(shard_b, 1),
            "verify_both_us": round(verify_b, 1),
            "total_ms": round((shard_b + verify_b) / 1e3, 4),
            "verify_batch_vs_single": round(verify_b / (verify_ms * 1e3), 3),
            "bytes_identical_to_single": sharded[0] == (public, inputs) and verified[0] == single_verify_bytes,
        }
    if "draft" in case:
        ref = draft.DraftPrio3(case["draft"]())

        def draft_run() -> list[bytes]:
            pub, ins = ref.shard(CTX, meas, nonce, rand)
            inits = [ref.verify_init(VERIFY_KEY, CTX, j, nonce, pub, ins[j]) for j in range(2)]
            msg = ref.verifier_shares_to_message(CTX, [v for _, v in inits])
            for state, _ in inits:
                ref.verify_next(state, msg)
            return [pub, *ins, msg, *(v for _, v in inits)]

        identical = draft_run() == [public, *inputs, *single_verify_bytes]
        draft_ms = _median_ms(draft_run, max(3, reps // 4))
        row["draft_transcription"] = {
            "total_ms": round(draft_ms, 3),
            "bytes_identical": identical,
            "speedup_single": round(draft_ms / (shard_ms + verify_ms), 1),
            "speedup_deployed": round(draft_ms / row["deployed"]["total_ms"], 1),
        }
        if case["name"] in QUOTED_DRAFT_REFERENCE_MS:
            quoted = QUOTED_DRAFT_REFERENCE_MS[case["name"]]
            row["draft_transcription"]["quoted_draft_reference_ms"] = quoted
            row["draft_transcription"]["transcription_vs_quoted"] = round(draft_ms / quoted, 2)
    if case["name"] in QUOTED_LIBPRIO_SHARD_US:
        quoted = QUOTED_LIBPRIO_SHARD_US[case["name"]]
        row["libprio_rs"] = {
            "quoted_shard_us": quoted,
            "single_shard_factor": round(shard_ms * 1e3 / quoted, 2),
            "deployed_shard_factor": round(row["deployed"]["shard_us"] / quoted, 2),
        }
    return row


def _check(budget: str, measured: Any, limit: Any, ok: bool) -> dict[str, Any]:
    return {"budget": budget, "measured": measured, "limit": limit, "ok": bool(ok)}


def budgets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The budgets of the rows that were run (--fl-only runs only the FL ones)."""
    by_name = {r["case"]: r for r in rows}
    checks = []
    if "Histogram(100,chunk=10)" in by_name:
        hist = by_name["Histogram(100,chunk=10)"]["deployed"]["total_ms"]
        checks.append(_check("Histogram(100) shard + verification < 1 ms (deployed)", hist, 1.0, hist < 1.0))
        single = by_name["Histogram(100,chunk=10)"]["draft_transcription"]["speedup_single"]
        checks.append(_check(f"Histogram(100): single-report speed-up over the draft transcription >= {SINGLE_SPEEDUP_BUDGET:g}x",
                             single, SINGLE_SPEEDUP_BUDGET, single >= SINGLE_SPEEDUP_BUDGET))
    if "SumVec(1000,max=255,chunk=89)" in by_name:
        sumvec = by_name["SumVec(1000,max=255,chunk=89)"]["single"]["total_ms"]
        checks.append(_check("SumVec(1000) shard + verification < 40 ms (single report)", sumvec, 40.0, sumvec < 40.0))
    if FL_CASE in by_name:
        fl = by_name[FL_CASE]
        shard, verify = fl["single"]["shard_ms"], fl["single"]["verify_both_ms"]
        checks.append(_check(f"SumVec(100000) shard <= {FL_SHARD_MS_BUDGET:g} ms", shard, FL_SHARD_MS_BUDGET,
                             shard <= FL_SHARD_MS_BUDGET))
        checks.append(_check(f"SumVec(100000) verification (both aggregators) <= {FL_VERIFY_MS_BUDGET:g} ms", verify,
                             FL_VERIFY_MS_BUDGET, verify <= FL_VERIFY_MS_BUDGET))
        if "fl_batch" in fl:
            mem = fl["fl_batch"]["peak_mb_per_report_beyond_report"]
            checks.append(_check(f"SumVec(100000) peak memory per report in a batch <= {FL_MEMORY_MB_BUDGET:g} MB beyond the report",
                                 mem, FL_MEMORY_MB_BUDGET, mem <= FL_MEMORY_MB_BUDGET))
    for r in rows:
        name = r["case"]
        if "fl_batch" in r:
            ratio = r["fl_batch"]["batched_vs_single_shard"]
            # 5 % is the run-to-run noise of one long shard on a shared machine
            checks.append(_check(f"{name}: batched shard no slower than single (per report)", ratio, 1.05, ratio <= 1.05))
        if "draft_transcription" in r:
            d = r["draft_transcription"]
            checks.append(_check(f"{name}: deployed speed-up over the draft transcription >= {SPEEDUP_BUDGET:g}x",
                                 d["speedup_deployed"], SPEEDUP_BUDGET, d["speedup_deployed"] >= SPEEDUP_BUDGET))
            checks.append(_check(f"{name}: draft transcription gives the same bytes", d["bytes_identical"], True,
                                 d["bytes_identical"]))
            dep = r["deployed"]
            if r["bytes"]["meas_len_elements"] < BATCH_RATIO_MAX_MEAS_LEN:
                checks.append(_check(f"{name}: batched verification <= {BATCH_RATIO_BUDGET} x single",
                                     dep["verify_batch_vs_single"], BATCH_RATIO_BUDGET,
                                     dep["verify_batch_vs_single"] <= BATCH_RATIO_BUDGET))
            checks.append(_check(f"{name}: batches give the same bytes as single reports",
                                 dep["bytes_identical_to_single"], True, dep["bytes_identical_to_single"]))
        if "libprio_rs" in r:
            f = r["libprio_rs"]["deployed_shard_factor"]
            checks.append(_check(f"{name}: shard within {LIBPRIO_FACTOR_BUDGET:g}x of libprio-rs (quoted; deployed)",
                                 f, LIBPRIO_FACTOR_BUDGET, f <= LIBPRIO_FACTOR_BUDGET))
    return checks


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table docs/prio3.md and the closing notes quote."""
    lines = [
        "| case | single shard + verify (ms) | deployed per report (shard / verify, us) | draft transcription (ms) | speed-up single / deployed |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        s, d, t = r["single"], r.get("deployed"), r.get("draft_transcription")
        dep = f"{d['shard_us']} / {d['verify_both_us']}" if d else "-"
        if "fl_batch" in r:
            dep = f"{r['fl_batch']['shard_ms_per_report'] * 1e3:.0f} / -"
        tr = f"{t['total_ms']}" if t else "-"
        sp = f"{t['speedup_single']}x / {t['speedup_deployed']}x" if t else "-"
        lines.append(f"| {r['case']} | {s['shard_ms']} + {s['verify_both_ms']} = {s['total_ms']} | {dep} | {tr} | {sp} |")
    fl = [r for r in rows if "fl_batch" in r]
    if fl:
        lines += ["", "| FL case | shard (ms) | verify, both (ms) | batched shard / single | peak MB per report in a batch (beyond the report) |",
                  "|---|---|---|---|---|"]
        for r in fl:
            b = r["fl_batch"]
            lines.append(f"| {r['case']} | {r['single']['shard_ms']:.1f} | {r['single']['verify_both_ms']:.1f} | "
                         f"{b['batched_vs_single_shard']} | {b['peak_mb_per_report']} ({b['peak_mb_per_report_beyond_report']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="5 repeats, skip SumVec(100000)")
    parser.add_argument("--out", type=Path, help="also write the JSON report here (and a .md table beside it)")
    parser.add_argument("--batch-size", type=int, default=1000, help="reports per batch in the deployed path")
    parser.add_argument("--fl-batch", type=int, default=4, help="reports per batch in the SumVec(100000) memory rows")
    parser.add_argument("--fl-only", action="store_true",
                        help="only the federated-learning rows: SumVec(100000) on Field128 and the Field64 multiproof variant")
    args = parser.parse_args(argv)
    if args.quick and args.fl_only:
        parser.error("--quick skips the FL rows that --fl-only selects")
    repeats = 5 if args.quick else args.repeats
    rows = [run_case(c, repeats, args.batch_size, args.fl_batch) for c in _cases(args.quick, args.fl_only)]
    checks = budgets(rows)
    report = {
        "bench": "prio3",
        "spec": "draft-irtf-cfrg-vdaf-18",
        "aggregators": 2,
        "statistic": f"lowest of {BLOCKS} block medians over {repeats} runs (single), "
                     f"{max(3, repeats // 5)} batches (deployed)",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "field_kernel": "native" if kernel_enabled() else f"numpy ({KERNEL_ENV}=numpy)",
        "prover_threads": prover_threads(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "quoted_not_measured": {
            "draft_reference_total_ms": QUOTED_DRAFT_REFERENCE_MS,
            "libprio_rs_shard_us": QUOTED_LIBPRIO_SHARD_US,
            "source": "issue 6 (figures quoted there; not reproduced by this script)",
        },
        "results": rows,
        "table": markdown(rows),
        "budgets": checks,
        "all_budgets_met": all(c["ok"] for c in checks),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".md").write_text(report["table"] + "\n")
    return 0 if report["all_budgets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
