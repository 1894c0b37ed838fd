"""Peer comparison on one workload: our shares mode vs HE, MPC and pairwise masking.

The workload: ``reports`` edge readings, each a vector of ``dimension``
integers of ``bits`` bits, summed exactly.  For every system, in this process
(no network; the service cost is measured by bench.runner), per report:

* ``client``: what an edge node computes to submit one reading;
* ``aggregate``: what the servers compute per reading, summed over all of
  them (for ours: K HPKE opens + verification + K accumulations);
* ``finish``: once per batch, turning the aggregate into the result;
* ``bytes``: what one edge node uploads per reading.

Systems:

* ours: `mpc.client.shard_report` + `mpc.aggregator` + `mpc.collector`, K = 2,
  TwinRing64 (the ratio baseline) and Prio3 (with validity proofs);
* Paillier: `phe` (python-paillier) as a user would call it, one ciphertext
  per entry;
* CKKS: `tenseal` (N = 8192, scale 2^40), one ciphertext per reading;
* MPyC: secure sum of `secint`s among ``mpyc_parties`` local parties
  (subprocesses on localhost; skipped with a note when `mpyc` is absent);
* pairwise masks of the SecAgg+ kind (implemented here): X25519 agreement
  with each neighbour on a random k-regular graph (k = 2 ceil(log2 n) as in
  SecAgg+), HKDF-SHA256, mask expanded with AES-128-CTR into Z/2^64; masks
  cancel in the sum.  Dropout recovery (Shamir shares of keys and self-mask
  seeds) is left out, so its cost is a lower bound of SecAgg+'s.

Ratios are peer / ours-TwinRing64 for client, aggregate and total
(client + aggregate + finish / reports) time; each time is the median over
``repeats`` rounds in which the systems take turns.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

REPO = Path(__file__).resolve().parents[1]
MASK_DST = b"twinmpc/v1/bench/secagg-pairwise-mask"


# ----------------------------------------------------------- pairwise masks ---
def neighbour_graph(n: int, k: int, rng: random.Random) -> list[set[int]]:
    """Random k-regular graph (Harary graph on a random permutation), as SecAgg+ uses."""
    if n < 2:
        raise ValueError("pairwise masking needs at least 2 clients")
    k = min(k, n - 1)
    k += k % 2 if k < n - 1 else 0  # an even degree keeps the ring graph regular
    k = min(k, n - 1)
    order = list(range(n))
    rng.shuffle(order)
    pos = {c: p for p, c in enumerate(order)}
    graph: list[set[int]] = [set() for _ in range(n)]
    for c in range(n):
        for step in range(1, k // 2 + 1):
            for other in (order[(pos[c] + step) % n], order[(pos[c] - step) % n]):
                if other != c:
                    graph[c].add(other)
                    graph[other].add(c)
        if k % 2 and n % 2 == 0:  # odd degree: add the diametric partner
            other = order[(pos[c] + n // 2) % n]
            graph[c].add(other)
            graph[other].add(c)
    return graph


def pair_mask(shared_secret: bytes, low: int, high: int, round_id: bytes, length: int) -> np.ndarray:
    """Mask in (Z/2^64)^length for the pair (low, high), expanded with AES-128-CTR from the full secret."""
    info = MASK_DST + low.to_bytes(4, "big") + high.to_bytes(4, "big")
    key = HKDF(algorithm=hashes.SHA256(), length=16, salt=round_id, info=info).derive(shared_secret)
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(enc.update(bytes(8 * length)) + enc.finalize(), dtype="<u8").astype(np.uint64)


class MaskingClient:
    """One SecAgg-style client: an X25519 key per round, masks with every neighbour."""

    def __init__(self, index: int, rand: Callable[[int], bytes] = os.urandom) -> None:
        self.index = index
        self._key = X25519PrivateKey.from_private_bytes(rand(32))
        self.public_bytes = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def __repr__(self) -> str:
        return f"MaskingClient({self.index}, key=<redacted>)"

    def mask(self, x: np.ndarray, neighbours: dict[int, bytes], round_id: bytes) -> np.ndarray:
        """x + sum_{j > i} m_ij - sum_{j < i} m_ij (mod 2^64); x must be uint64."""
        if x.dtype != np.uint64:
            raise TypeError("inputs are vectors over Z/2^64 (uint64)")
        out = x.copy()
        for j, pub in sorted(neighbours.items()):
            if j == self.index:
                raise ValueError("a client is not its own neighbour")
            secret = self._key.exchange(X25519PublicKey.from_public_bytes(pub))
            m = pair_mask(secret, min(self.index, j), max(self.index, j), round_id, x.size)
            if self.index < j:
                out += m
            else:
                out -= m
        return out


def secagg_round(inputs: np.ndarray, k: int, rand: Callable[[int], bytes] = os.urandom, seed: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run one masking round over rows of `inputs` (uint64); returns (server sum, masked rows)."""
    n = inputs.shape[0]
    round_id = rand(16)
    graph = neighbour_graph(n, k, random.Random(seed if seed is not None else int.from_bytes(rand(8), "big")))
    clients = [MaskingClient(i, rand) for i in range(n)]
    masked = [c.mask(inputs[i], {j: clients[j].public_bytes for j in graph[i]}, round_id) for i, c in enumerate(clients)]
    return np.sum(np.stack(masked), axis=0, dtype=np.uint64), masked


# ------------------------------------------------------------------- systems ---
def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def _ours(values: np.ndarray, bits: int, vdaf: str) -> dict[str, Any]:
    from twinmpc.crypto.seal import HpkeKeypair
    from twinmpc.mpc import aggregator as agg
    from twinmpc.mpc import collector
    from twinmpc.mpc.client import shard_report
    from twinmpc.mpc.task import Task, b64encode

    n, d = values.shape
    keys = [HpkeKeypair.generate(j) for j in range(2)]
    ck = HpkeKeypair.generate(0)
    task = Task.from_dict({
        "task_id": b64encode(os.urandom(32)),
        "measurement": {"type": "sumvec", "length": d, "bits": bits},
        "vdaf": vdaf,
        "aggregators": [{"endpoint": f"127.0.0.1:{7000 + j}", "hpke_config": b64encode(kp.config.encode())} for j, kp in enumerate(keys)],
        "collector_hpke_config": b64encode(ck.config.encode()),
        "window_seconds": 300,
        "min_batch_size": 1,
    })
    vk = os.urandom(task.scheme.VERIFY_KEY_SIZE)
    client_ms, reports = _timed(lambda: [shard_report(task, values[i], time=1_700_000_000) for i in range(n)])
    accs = [agg.Accumulator(task) for _ in keys]

    def aggregate() -> None:
        for r in reports:
            inits = [agg.verify_init(task, vk, j, r.report_id, r.public_share, agg.open_input_share(task, kp, j, r)) for j, kp in enumerate(keys)]
            msg = agg.verifier_message(task, [v for _, v in inits])
            for a, (state, _) in zip(accs, inits):
                a.add([r.report_id], [agg.verify_finish(task, state, msg)])

    aggregate_ms, _ = _timed(aggregate)

    def finish():
        sealed = [agg.seal_aggregate_share(task, 1_699_999_800, j, a, a.agg_share) for j, a in enumerate(accs)]
        return collector.unshard(task, ck, 1_699_999_800, n, accs[0].checksum, sealed).result

    finish_ms, result = _timed(finish)
    size = len(reports[0].report_id) + len(reports[0].public_share) + sum(len(s) for s in reports[0].sealed_shares)
    return _row(client_ms, aggregate_ms, finish_ms, n, size, list(np.asarray(result).reshape(-1)), values)


def _paillier(values: np.ndarray, key_bits: int) -> dict[str, Any]:
    from phe import paillier

    n, d = values.shape
    pub, priv = paillier.generate_paillier_keypair(n_length=key_bits)
    rows = values.tolist()
    client_ms, cts = _timed(lambda: [[pub.encrypt(int(v)) for v in row] for row in rows])

    def aggregate():
        acc = cts[0]
        for row in cts[1:]:
            acc = [a + b for a, b in zip(acc, row)]
        return acc

    aggregate_ms, acc = _timed(aggregate)
    finish_ms, result = _timed(lambda: [priv.decrypt(c) for c in acc])
    size = d * ((2 * key_bits + 7) // 8)
    return _row(client_ms, aggregate_ms, finish_ms, n, size, result, values)


def _ckks(values: np.ndarray) -> dict[str, Any]:
    import tenseal as ts

    n = values.shape[0]
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2**40
    rows = values.astype(np.float64).tolist()
    client_ms, blobs = _timed(lambda: [ts.ckks_vector(ctx, row).serialize() for row in rows])

    def aggregate():
        acc = ts.ckks_vector_from(ctx, blobs[0])
        for b in blobs[1:]:
            acc += ts.ckks_vector_from(ctx, b)
        return acc

    aggregate_ms, acc = _timed(aggregate)
    finish_ms, result = _timed(lambda: acc.decrypt())
    row = _row(client_ms, aggregate_ms, finish_ms, n, len(blobs[0]), [round(v) for v in result], values)
    row["max_abs_error"] = float(np.max(np.abs(np.array(result) - values.sum(axis=0))))
    return row


def _secagg(values: np.ndarray, neighbours: int) -> dict[str, Any]:
    n, d = values.shape
    k = neighbours or 2 * math.ceil(math.log2(n))
    graph = neighbour_graph(n, k, random.Random(int.from_bytes(os.urandom(8), "big")))
    round_id = os.urandom(16)
    clients = [MaskingClient(i) for i in range(n)]  # key generation and advertisement: setup, excluded
    inputs = values.astype(np.uint64)
    client_ms, masked = _timed(lambda: [c.mask(inputs[i], {j: clients[j].public_bytes for j in graph[i]}, round_id) for i, c in enumerate(clients)])
    aggregate_ms, total = _timed(lambda: np.sum(np.stack(masked), axis=0, dtype=np.uint64))
    row = _row(client_ms, aggregate_ms, 0.0, n, 32 + 8 * d, [int(v) for v in total], values)
    row["neighbours"] = len(graph[0])
    return row


def _free_ports(count: int) -> int:
    """A base port with `count` free consecutive loopback ports."""
    for _ in range(50):
        base = random.randrange(20_000, 60_000)
        socks = []
        try:
            for i in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free loopback ports for MPyC")


def _mpyc(values: np.ndarray, parties: int) -> dict[str, Any]:
    if importlib.util.find_spec("mpyc") is None:
        return {"skipped": "mpyc not installed (pip install mpyc: optional 'bench' extra)"}
    n = values.shape[0]
    with tempfile.TemporaryDirectory(prefix="twinmpc-mpyc-") as tmp:
        inp, out = Path(tmp) / "input.json", Path(tmp) / "output.json"
        inp.write_text(json.dumps(values.tolist()))
        env = {**os.environ, "TWINMPC_MPYC_INPUT": str(inp), "TWINMPC_MPYC_OUTPUT": str(out),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, str(Path(__file__).resolve()), "-M", str(parties), "-B", str(_free_ports(parties))]
        proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0 or not out.exists():
            return {"skipped": f"mpyc run failed ({proc.returncode}): {proc.stderr.strip()[-300:]}"}
        timing = json.loads(out.read_text())
    row = _row(timing["client_ms"], timing["aggregate_ms"], timing["finish_ms"], n, None, timing["result"], values)
    row["parties"] = parties
    return row


def _mpyc_party_main() -> None:
    """Entry point of one MPyC party (run as a script; mpyc reads its own argv)."""
    from mpyc.runtime import mpc

    rows = json.loads(Path(os.environ["TWINMPC_MPYC_INPUT"]).read_text())
    secint = mpc.SecInt(64)

    async def body() -> dict[str, Any]:
        await mpc.start()
        t0 = time.perf_counter()
        flat = [v for row in rows for v in row] if mpc.pid == 0 else [0] * (len(rows) * len(rows[0]))
        shared = mpc.input([secint(v) for v in flat], senders=0)
        await mpc.gather(shared)  # each party holds its shares of every input
        t1 = time.perf_counter()
        d = len(rows[0])
        sums = [mpc.sum(shared[i::d]) for i in range(d)]
        await mpc.gather(sums)
        t2 = time.perf_counter()
        result = await mpc.output(sums)
        t3 = time.perf_counter()
        await mpc.shutdown()
        return {"client_ms": (t1 - t0) * 1000, "aggregate_ms": (t2 - t1) * 1000, "finish_ms": (t3 - t2) * 1000, "result": [int(v) for v in result]}

    timing = mpc.run(body())
    if mpc.pid == 0:
        Path(os.environ["TWINMPC_MPYC_OUTPUT"]).write_text(json.dumps(timing))


def _row(client_ms: float, aggregate_ms: float, finish_ms: float, n: int, size: int | None, result: list, values: np.ndarray) -> dict[str, Any]:
    expected = [int(v) for v in values.sum(axis=0)]
    return {
        "client_ms": client_ms / n,
        "aggregate_ms": aggregate_ms / n,
        "finish_ms": finish_ms,
        "total_ms_per_report": (client_ms + aggregate_ms + finish_ms) / n,
        "bytes_per_report": size,
        "correct": [int(v) for v in result] == expected,
    }


_TIMES = ("client_ms", "aggregate_ms", "finish_ms", "total_ms_per_report")


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each time over the passes; correct only if every pass was."""
    if any(r.get("skipped") for r in rows):
        return next(r for r in rows if r.get("skipped"))
    out = dict(rows[0])
    for key in _TIMES:
        out[key] = statistics.median(r[key] for r in rows)
    out["correct"] = all(r["correct"] for r in rows)
    out["passes"] = len(rows)
    return out


def run_peers(cfg: Any) -> dict[str, Any]:
    """Run every system on one workload (bench.scenario.Peers) and compute ratios to ours.

    The systems run in turn, ``cfg.repeats`` rounds, so a burst of load from
    another job on the machine hits every system alike; each time is the median
    over the rounds.
    """
    rng = np.random.default_rng(2026)
    values = rng.integers(0, 1 << cfg.bits, size=(cfg.reports, cfg.dimension), dtype=np.int64)
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "ours twinring64 (K=2)": lambda: _ours(values, cfg.bits, "twinring64"),
        "ours prio3 (K=2, validity proofs)": lambda: _ours(values, cfg.bits, "prio3"),
        f"paillier phe-{cfg.paillier_bits}": lambda: _paillier(values, cfg.paillier_bits),
        "ckks tenseal N=8192": lambda: _ckks(values),
        "pairwise masks (SecAgg+-style, no dropout recovery)": lambda: _secagg(values, cfg.secagg_neighbors),
        f"mpyc secure sum ({cfg.mpyc_parties} parties)": lambda: _mpyc(values, cfg.mpyc_parties),
    }
    passes: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for _ in range(cfg.repeats):
        for name, fn in runs.items():
            if not (passes[name] and passes[name][-1].get("skipped")):
                passes[name].append(fn())
    systems = {name: _median_row(rows) for name, rows in passes.items()}
    notes: list[str] = []
    base = systems["ours twinring64 (K=2)"]
    for name, row in systems.items():
        if row.get("skipped"):
            notes.append(f"{name}: skipped - {row['skipped']}")
            print(f"peers: {name} skipped: {row['skipped']}", file=sys.stderr)
            continue
        row["ratios"] = {
            "total": row["total_ms_per_report"] / base["total_ms_per_report"],
            "client": row["client_ms"] / base["client_ms"],
            "aggregate": row["aggregate_ms"] / base["aggregate_ms"],
        }
    notes.append("aggregate time is summed over all servers (ours: both aggregators; MPyC: party 0's view of the joint run).")
    notes.append("MPyC: party 0 secret-shares every reading on the clients' behalf over plain TCP between local parties "
                 "(no per-client key agreement or sealing, no TLS unless --ssl), so its client cost is not an edge node's.")
    notes.append("CKKS sums approximately: 'result' compares the rounded sum; max_abs_error is in result.json.")
    return {"workload": {"reports": cfg.reports, "dimension": cfg.dimension, "bits": cfg.bits, "repeats": cfg.repeats},
            "ours_label": "twinring64", "systems": systems, "notes": notes}


if __name__ == "__main__":
    _mpyc_party_main()
