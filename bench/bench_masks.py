"""Masks mode (SecAgg+ with the consistency round) against Flower's SecAgg+ (`flwr`), cell by cell.

For every cell (n clients, vector length d, fraction dropping out before their
masked input) both systems sum the same integers exactly, with the same
neighbour count k and threshold t (ours: the task rule for a 30 % dropout
tolerance, t = floor(k/2) + 1; Flower: num_shares = k + 1, the node's own share
included, reconstruction_threshold = t), in one process, no network:

* ours: `mpc.masks` client and server state machines, clients with real
  certificate credentials (`services.masks_credentials`), each with its own
  cold directory (the first window a node ever sees: every neighbour's
  certificate verified) -- plus the same clients' second window, with what the
  first one verified and agreed cached (with a complete graph that is the steady
  state; with a sparse one each window brings some new neighbours, whose
  certificates are checked then, until a node has met its cohort);
* Flower: `bench/flower_secaggplus.py` in flwr's own virtualenv (it pins an
  older protobuf), a subprocess: Flower's workflow and client mod, in-process grid.

Reported per client: client time (all its steps), server time (the server's
work divided by n), bytes (every message to and from the client as serialized
on the wire: our canonical messages inside the gRPC request/reply protobufs;
Flower's protobuf Messages), request/response rounds, and whether the sum is
exact.  DP noise is off (Flower has none).

    python -m twinmpc.bench.bench_masks                     # the full grid (long: see --help)
    python -m twinmpc.bench.bench_masks --n 100 --d 1 10000 --dropout 0 0.3
    python -m twinmpc.bench.bench_masks --quick --no-flower   # plumbing only

Goals checked at the end: client and server each >= 5x cheaper per client than
Flower, bytes within 1.2x of Flower's, exact sums at 30 % dropout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from twinmpc.mpc.dp import DpParams
from twinmpc.mpc.masks.client import MasksClient
from twinmpc.mpc.masks.params import MasksParams
from twinmpc.mpc.masks.plan import RoundConfig
from twinmpc.mpc.masks.server import MasksServer
from twinmpc.mpc.masks.session import Session
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.services.masks_credentials import CertificateDirectory, client_keys
from twinmpc.services.pki import create_ca

REPO = Path(__file__).resolve().parents[1]
FLOWER_VERSION = "1.42.0"
# outside the repository: the venv is not ours to scan, test or commit
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "twinmpc" / f"flwr-{FLOWER_VERSION}"
TOLERANCE = Fraction(3, 10)
STEPS = ("advertise", "share_keys", "masked_input", "confirm", "unmask")
GOALS = {"client": 5.0, "server": 5.0, "bytes": 1.2}


@dataclass
class Cohort:
    """n enrolled clients: keys, credentials and their own directories, kept across windows."""

    keys: list
    directories: list
    pair_secrets: list
    ca_pem: bytes

    @classmethod
    def enrol(cls, n: int) -> Cohort:
        ca = create_ca("bench CA")
        keys = []
        for i in range(n):
            leaf = ca.issue("edge", f"edge-{i:05d}")
            keys.append(client_keys(leaf.cert_pem, leaf.key_pem, X25519PrivateKey.generate()))
        return cls(keys, [CertificateDirectory(ca.cert_pem) for _ in range(n)], [{} for _ in range(n)], ca.cert_pem)

    def cold(self) -> Cohort:
        """The same clients with nothing verified or agreed yet: the first window they ever see."""
        n = len(self.keys)
        return Cohort(self.keys, [CertificateDirectory(self.ca_pem) for _ in range(n)], [{} for _ in range(n)], self.ca_pem)


def run_ours(cohort: Cohort, d: int, drop: float, *, window: int, seed: int, tolerance: Fraction = TOLERANCE) -> dict[str, Any]:
    n = len(cohort.keys)
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**15 + 1, size=(n, d)).astype(np.uint64)
    dropped = set(rng.choice(n, size=int(drop * n), replace=False).tolist())
    config = RoundConfig(Session(bytes(32), window, 0), d, MasksParams(dropout=tolerance, max_clients=max(n, 2)), DpParams(), 1, 1)
    clients = [MasksClient(config, cohort.keys[i], cohort.directories[i], values[i], pair_secrets=cohort.pair_secrets[i]) for i in range(n)]
    server = MasksServer(config)
    names = [k.identity for k in cohort.keys]
    client_s = server_s = 0.0
    wire = 0
    for r, step in enumerate(STEPS):
        for i, client in enumerate(clients):
            if r >= 2 and i in dropped:
                continue  # gone before its masked input
            t0 = time.perf_counter()
            reply = b"" if r == 0 else server.reply(names[i])
            t1 = time.perf_counter()
            message = getattr(client, step)(*(() if r == 0 else (reply,)))
            t2 = time.perf_counter()
            server.submit(names[i], message)
            t3 = time.perf_counter()
            client_s += t2 - t1
            server_s += (t1 - t0) + (t3 - t2)
            wire += pb.MasksRoundRequest(task_id=bytes(32), window_start=window, attempt=0, message=message).ByteSize()
            wire += pb.MasksRoundReply(message=reply).ByteSize() if r else 0
        t0 = time.perf_counter()
        server.close()
        server_s += time.perf_counter() - t0
    summed = [i for i in range(n) if i not in dropped]
    exact = bool(np.array_equal(server.result.vector, values[summed].sum(axis=0, dtype=np.uint64)))
    return {"client_ms": 1000 * client_s / n, "server_ms": 1000 * server_s / n, "bytes_per_client": wire / n, "rounds": 5,
            "exact": exact, "k": server.result.plan.k, "t": server.result.plan.t}


def flower_python(venv: Path) -> Path:
    """flwr's own virtualenv (created on first use; never the project's environment)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with flwr=={FLOWER_VERSION} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"flwr=={FLOWER_VERSION}"], check=True)
    return python


def run_flower(python: Path, n: int, d: int, drop: float, k: int, t: int, timeout: float, seed: int) -> dict[str, Any]:
    cell = json.dumps({"n": n, "d": d, "drop": drop, "k": k, "t": t, "seed": seed})
    try:
        proc = subprocess.run([str(python), str(REPO / "bench" / "flower_secaggplus.py"), cell], capture_output=True, text=True,
                              timeout=timeout, env={k_: v for k_, v in os.environ.items() if k_ != "PYTHONPATH"})
    except subprocess.TimeoutExpired:
        return {"skipped": f"over the {timeout:.0f} s limit per cell"}
    if proc.returncode != 0:
        return {"skipped": f"flwr failed: {proc.stderr.strip()[-300:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratio(flower: dict, ours: dict, key: str) -> float | None:
    if flower.get("skipped") or not ours.get(key):
        return None
    return flower[key] / ours[key]


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| n | d | dropout | k / t | client ms: ours first / second window, Flower (x) | server ms: ours, Flower (x) "
            "| bytes per client: ours, Flower (ours/Flower) | rounds | exact: ours / Flower |")
    out = [head, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        o, w, f = r["ours"], r["ours_warm"], r["flower"]
        if f.get("skipped"):
            fc = fs = fb = f"skipped ({f['skipped']})"
            fe, fr = "-", "-"
        else:
            fc = f"{f['client_ms']:.1f} ({f['client_ms'] / w['client_ms']:.0f}x second, {f['client_ms'] / o['client_ms']:.0f}x first)"
            fs = f"{f['server_ms']:.1f} ({f['server_ms'] / o['server_ms']:.0f}x)"
            fb = f"{f['bytes_per_client']:,.0f} ({o['bytes_per_client'] / f['bytes_per_client']:.2f})"
            fe, fr = ("yes" if f["exact"] else "NO"), str(f["rounds"])
        out.append(
            f"| {r['n']:,} | {r['d']:,} | {r['dropout']:.0%} | {o['k']} / {o['t']} | {o['client_ms']:.1f} / {w['client_ms']:.1f}, {fc} "
            f"| {o['server_ms']:.1f}, {fs} | {o['bytes_per_client']:,.0f}, {fb} | {o['rounds']} vs {fr} "
            f"| {'yes' if o['exact'] and w['exact'] else 'NO'} / {fe} |"
        )
    return "\n".join(out)


def goals(rows: list[dict[str, Any]]) -> list[str]:
    misses = []
    for r in rows:
        o, w, f = r["ours"], r["ours_warm"], r["flower"]
        cell = f"n={r['n']} d={r['d']} dropout={r['dropout']:.0%}"
        if not (o["exact"] and w["exact"]):
            misses.append(f"{cell}: our sum is not exact")
        if f.get("skipped"):
            continue
        if f["client_ms"] / w["client_ms"] < GOALS["client"]:
            misses.append(f"{cell}: client only {f['client_ms'] / w['client_ms']:.1f}x cheaper (second window)")
        if f["server_ms"] / o["server_ms"] < GOALS["server"]:
            misses.append(f"{cell}: server only {f['server_ms'] / o['server_ms']:.1f}x cheaper")
        if o["bytes_per_client"] > GOALS["bytes"] * f["bytes_per_client"]:
            misses.append(f"{cell}: {o['bytes_per_client'] / f['bytes_per_client']:.2f}x Flower's bytes")
    return misses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--d", type=int, nargs="+", default=[1, 10_000, 100_000])
    ap.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    ap.add_argument("--flwr-venv", type=Path, default=DEFAULT_VENV, help="flwr's own virtualenv (created if missing)")
    ap.add_argument("--flower-timeout", type=float, default=900.0, help="seconds per Flower cell before it is trimmed")
    ap.add_argument("--skip-flower", nargs="*", default=[], metavar="N:D", help="cells not run with Flower (too long), e.g. 1000:100000")
    ap.add_argument("--no-flower", action="store_true", help="ours only (plumbing check)")
    ap.add_argument("--reuse-flower", type=Path, help="result.json of an earlier run: its Flower cells (same n, d, dropout, k, t) are not run again")
    ap.add_argument("--tolerance", type=Fraction, default=TOLERANCE, help="dropout tolerance that sets k and t (default 3/10)")
    ap.add_argument("--quick", action="store_true", help="n=12, d=1 and 100, dropout 0 and 0.3")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "masks")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.d, args.dropout = [12], [1, 100], [0.0, 0.3]
    python = None if args.no_flower else flower_python(args.flwr_venv)
    reused = {}
    if args.reuse_flower:
        for r in json.loads(args.reuse_flower.read_text())["rows"]:
            if not r["flower"].get("skipped"):
                reused[(r["n"], r["d"], r["dropout"], r["ours"]["k"], r["ours"]["t"])] = r["flower"]
    rows = []
    for n in args.n:
        cohort = Cohort.enrol(n)
        for d in args.d:
            for drop in args.dropout:
                seed = hash((n, d, drop)) & 0xFFFF
                ours = run_ours(cohort.cold(), d, drop, window=2 * len(rows), seed=seed, tolerance=args.tolerance)
                run_ours(cohort, d, drop, window=2 * len(rows), seed=seed, tolerance=args.tolerance)  # the cohort's first window
                warm = run_ours(cohort, d, drop, window=2 * len(rows) + 1, seed=seed, tolerance=args.tolerance)
                earlier = reused.get((n, d, drop, ours["k"], ours["t"]))
                if earlier is not None:
                    flower = {**earlier, "reused": str(args.reuse_flower)}
                elif python is None or f"{n}:{d}" in args.skip_flower:
                    flower = {"skipped": "not run" if python is None else "trimmed: too long on this machine (--skip-flower)"}
                else:
                    flower = run_flower(python, n, d, drop, ours["k"], ours["t"], args.flower_timeout, seed)
                rows.append({"n": n, "d": d, "dropout": drop, "tolerance": str(args.tolerance), "ours": ours, "ours_warm": warm, "flower": flower})
                print(f"n={n} d={d} dropout={drop:.0%}: ours {ours['client_ms']:.1f}/{warm['client_ms']:.1f} ms client, "
                      f"{ours['server_ms']:.1f} ms server, {ours['bytes_per_client']:,.0f} B; flower {flower}", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps({"rows": rows, "goals": GOALS, "flower": FLOWER_VERSION}, indent=2))
    text = table(rows)
    reused_from = sorted({r["flower"]["reused"] for r in rows if r["flower"].get("reused")})
    if reused_from:
        text += f"\n\nFlower cells taken from an earlier run of this benchmark: {', '.join(reused_from)}"
    misses = goals(rows)
    (args.out / "result.md").write_text(text + "\n")
    print(text)
    print("\nall goals met" if not misses else "\ngoals missed:\n" + "\n".join(f"- {m}" for m in misses))
    return 0 if all(r["ours"]["exact"] and r["ours_warm"]["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
