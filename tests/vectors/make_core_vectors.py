"""Generate the twinmpc-v1 known-answer vectors of the core library.

    python tests/vectors/make_core_vectors.py            # rewrite tests/vectors/twinmpc-v1/*.json
    python tests/vectors/make_core_vectors.py --check    # exit 1 if the files are out of date

Every input is fixed (seeds from SHAKE128 of a label, fixed private keys), so
the output is byte-identical on every run.  The one exception is HPKE, whose
encryption is randomised by RFC 9180: a sealed blob already stored in a vector
file is kept as long as it still opens under the stored key and binding to
the stored plaintext, and is only re-sealed when any of those changed.

File layout (one harness, tests/test_vectors_core.py, runs them all)::

    {"kind": ..., "version": "twinmpc-v1", "description": ..., "cases": [...]}

Cases whose name starts with ``bad_`` carry ``step`` (the function that must
raise) and ``error`` (the exception class name).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from twinmpc.crypto import prg, ring, seal, sharing  # noqa: E402
from twinmpc.crypto.seal import HpkeKeypair  # noqa: E402
from twinmpc.mpc import aggregator as agg  # noqa: E402
from twinmpc.mpc.client import input_share_info  # noqa: E402
from twinmpc.mpc.errors import SealError  # noqa: E402
from twinmpc.mpc.measurements import measurement_from_params  # noqa: E402
from twinmpc.mpc.report import Report  # noqa: E402
from twinmpc.mpc.ring_vdaf import TwinRing64  # noqa: E402
from twinmpc.mpc.task import Task, b64encode  # noqa: E402

VERSION = "twinmpc-v1"
OUT_DIR = Path(__file__).resolve().parent / VERSION
T0 = 1_700_000_000
X25519 = "x25519-hkdf-sha256-aes128gcm"
CHACHA = "x25519-hkdf-sha256-chacha20poly1305"
HYBRID = "mlkem768x25519-hkdf-sha256-aes128gcm"
# files of this generator; other schemes (e.g. Prio3*) keep their own vectors in the same folder
OWN_PREFIXES = ("Prg_", "AdditiveSharing_", "HpkeBinding_", "HpkeOpen_", "TwinRing64_", "FullRound_")


def fixed(label: str, n: int) -> bytes:
    """n deterministic bytes named by a label."""
    return hashlib.shake_128(b"twinmpc-v1 test vector/" + label.encode()).digest(n)


class StreamRand:
    """A `rand(n)` seam reading one SHAKE128 stream sequentially."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        out = fixed(self._label, self._pos + n)[self._pos :]
        self._pos += n
        return out


def fixed_keypair(label: str, config_id: int, suite: str) -> HpkeKeypair:
    size = 96 if suite == HYBRID else 32
    return HpkeKeypair.from_private_bytes(config_id, suite, fixed("hpke-key/" + label, size))


def fixed_task(label: str, measurement: dict[str, Any], k: int, suite: str) -> tuple[Task, list[HpkeKeypair], HpkeKeypair, dict[str, Any]]:
    """A task from a minimal document (stored as-is, so new optional task keys do not change the vectors)."""
    agg_keys = [fixed_keypair(f"{label}/agg{j}", j, suite) for j in range(k)]
    collector_key = fixed_keypair(f"{label}/collector", 0, suite)
    doc = {
        "task_id": b64encode(fixed("task-id/" + label, 32)),
        "measurement": measurement,
        "vdaf": "twinring64",
        "aggregators": [{"endpoint": f"agg{j}.example:443", "hpke_config": b64encode(kp.config.encode())} for j, kp in enumerate(agg_keys)],
        "collector_hpke_config": b64encode(collector_key.config.encode()),
        "window_seconds": 300,
        "min_batch_size": 1,
    }
    return Task.from_dict(dict(doc)), agg_keys, collector_key, doc


class SealedStore:
    """Keeps previously stored HPKE ciphertexts that still open (HPKE is randomised)."""

    def __init__(self, previous: dict[str, dict[str, Any]]) -> None:
        self._blobs: set[str] = set()
        for doc in previous.values():
            _collect_hex(doc, self._blobs)

    def seal(self, keypair: HpkeKeypair, plaintext: bytes, info: bytes) -> bytes:
        for blob_hex in sorted(self._blobs):
            blob = bytes.fromhex(blob_hex)
            if blob[:1] != bytes([keypair.config.config_id]):
                continue
            try:
                if seal.open_sealed(keypair, blob, info) == plaintext:
                    return blob
            except SealError:
                continue
        return seal.seal(keypair.config, plaintext, info)


def _collect_hex(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("sealed") and isinstance(value, str):
                out.add(value)
            elif key.startswith("sealed") and isinstance(value, list):
                out.update(v for v in value if isinstance(v, str))
            else:
                _collect_hex(value, out)
    elif isinstance(node, list):
        for item in node:
            _collect_hex(item, out)


def _doc(kind: str, description: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": kind, "version": VERSION, "description": description, "cases": cases}


# --- PRG --------------------------------------------------------------------------------------
def prg_vectors() -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    for i, (usage, binder, nbytes) in enumerate([("test", b"binder", 48), ("additive-share", b"", 16), ("additive-share", bytes(range(40)), 100)]):
        seed = fixed(f"prg/{i}", 32)
        dst = prg.dst(usage)
        cases.append(
            {
                "name": f"keystream_{i}",
                "seed": seed.hex(),
                "dst": dst.hex(),
                "binder": binder.hex(),
                "nbytes": nbytes,
                "keystream": prg.keystream(seed, dst, binder, nbytes).hex(),
            }
        )
    seed = fixed("prg/ring", 16)  # the 16-byte minimum seed
    cases.append(
        {
            "name": "expand_ring",
            "seed": seed.hex(),
            "dst": prg.dst("ring").hex(),
            "binder": "00",
            "n": 5,
            "ring": ring.encode(prg.expand_ring(seed, prg.dst("ring"), b"\x00", 5)).hex(),
        }
    )
    seed = fixed("prg/field64", 32)
    cases.append(
        {
            "name": "expand_field64",
            "seed": seed.hex(),
            "dst": prg.dst("field64").hex(),
            "binder": "",
            "n": 6,
            "field64": [str(int(v)) for v in prg.expand_field64(seed, prg.dst("field64"), b"", 6)],
        }
    )
    cases.append(
        {
            "name": "bad_short_seed",
            "step": "keystream",
            "error": "ValueError",
            "seed": fixed("prg/short", 15).hex(),
            "dst": prg.dst("test").hex(),
            "binder": "",
            "nbytes": 8,
        }
    )
    return _doc("prg", "HKDF-SHA256(ikm=seed, salt=dst, info=binder) -> AES-256-CTR(iv=0) keystream; ring words LE; Field64 by rejection", cases)


# --- additive sharing -----------------------------------------------------------------------
def sharing_vectors() -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    inputs = [(2, [0]), (2, [1, (1 << 64) - 1, 1 << 63]), (3, [5, 6, 7, 8]), (5, [(1 << 64) - 1] * 3)]
    for i, (k, x) in enumerate(inputs):
        binder = fixed(f"sharing/binder/{i}", 20)
        rand = StreamRand(f"sharing/rand/{i}")
        leader, seeds = sharing.split(ring.from_ints(x), k, binder, rand=rand)
        cases.append(
            {
                "name": f"split_{i}",
                "shares": k,
                "x": [str(v) for v in x],
                "binder": binder.hex(),
                "seeds": [s.hex() for s in seeds],
                "leader": ring.encode(leader).hex(),
                "helper_expansions": [ring.encode(sharing.expand_helper_share(s, binder, j, len(x))).hex() for j, s in enumerate(seeds, start=1)],
            }
        )
    cases.append({"name": "bad_one_share", "step": "split", "error": "ValueError", "shares": 1, "x": ["1"], "binder": "", "seeds": []})
    cases.append({"name": "bad_helper_index_0", "step": "helper_binder", "error": "ValueError", "binder": "00", "agg_index": 0})
    cases.append({"name": "bad_helper_index_256", "step": "helper_binder", "error": "ValueError", "binder": "00", "agg_index": 256})
    return _doc("additive-sharing", "leader = x - sum_j PRG(seed_j, dst('additive-share'), binder || j) over Z/2^64", cases)


# --- HPKE binding and fixed-key open ----------------------------------------------------------
def binding_vectors() -> dict[str, Any]:
    task, _, _, task_doc = fixed_task("binding", {"type": "count"}, 3, X25519)
    report_id = fixed("binding/report-id", 16)
    cases: list[dict[str, Any]] = [
        {
            "name": "binding_generic",
            "label": "lbl",
            "parts": ["6162", ""],
            "info": seal.binding("lbl", b"ab", b"").hex(),
        }
    ]
    for j in range(3):
        cases.append(
            {
                "name": f"input_share_info_{j}",
                "task_id": task.task_id.hex(),
                "report_id": report_id.hex(),
                "time": T0,
                "agg_index": j,
                "public_share": "",
                "info": input_share_info(task, report_id, T0, j, b"").hex(),
            }
        )
    checksum = agg.report_checksum([report_id])
    cases.append(
        {
            "name": "aggregate_share_info",
            "task_id": task.task_id.hex(),
            "window_start": T0 - T0 % 300,
            "agg_index": 1,
            "count": 1,
            "checksum": checksum.hex(),
            "info": agg.aggregate_share_info(task, T0 - T0 % 300, 1, 1, checksum).hex(),
        }
    )
    cases.append({"name": "report_checksum", "report_ids": [report_id.hex(), bytes(16).hex()], "checksum": agg.report_checksum([report_id, bytes(16)]).hex()})
    for case in cases[1:-1]:
        case["task"] = task_doc
    return _doc("hpke-binding", "HPKE info strings binding sealed shares to task, report, time, aggregator and public share", cases)


def hpke_open_vectors(store: SealedStore) -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    for suite in (X25519, CHACHA, HYBRID):
        kp = fixed_keypair(f"open/{suite}", 5, suite)
        info = seal.binding("input-share", b"task", b"report")
        plaintext = fixed(f"open/{suite}/plaintext", 40)
        sealed = store.seal(kp, plaintext, info)
        base = {"suite": suite, "config_id": 5, "private_key": kp.private_bytes().hex(), "hpke_config": kp.config.encode().hex(), "info": info.hex()}
        cases.append({"name": f"open_{suite}", **base, "sealed": sealed.hex(), "plaintext": plaintext.hex()})
        flipped = bytearray(sealed)
        flipped[len(sealed) // 2] ^= 1
        cases.append({"name": f"bad_flipped_byte_{suite}", "step": "open_sealed", "error": "SealError", **base, "sealed": bytes(flipped).hex()})
        cases.append(
            {
                "name": f"bad_wrong_info_{suite}",
                "step": "open_sealed",
                "error": "SealError",
                **{**base, "info": seal.binding("input-share", b"task", b"other report").hex()},
                "sealed": sealed.hex(),
            }
        )
        cases.append(
            {"name": f"bad_config_id_{suite}", "step": "open_sealed", "error": "SealError", **base, "sealed": (bytes([6]) + sealed[1:]).hex()}
        )
    return _doc("hpke-open", "RFC 9180 base mode, sealed = config_id || enc || ct; fixed private keys open stored ciphertexts", cases)


# --- TwinRing64 scheme rounds (no HPKE: exact bytes end to end) --------------------------------
SCHEME_ROUNDS: list[tuple[dict[str, Any], int, list[Any]]] = [
    ({"type": "count"}, 2, [1, 0, 1]),
    ({"type": "sum", "bits": 16}, 2, [65535, 1, 300]),
    ({"type": "mean", "bits": 8}, 3, [10, 20, 255]),
    ({"type": "histogram", "buckets": 5}, 3, [4, 0, 4, 2]),
    ({"type": "sumvec", "length": 4, "bits": 8}, 2, [[1, 2, 3, 255], [0, 0, 0, 1]]),
    ({"type": "fixedpointvec", "length": 3, "frac_bits": 16, "clip": 2.0}, 3, [[0.5, -1.25, 3.0], [-0.3, 0.0, -2.5]]),
    ({"type": "histogram", "buckets": 3}, 5, [1, 1]),
]


def scheme_round_vectors(index: int) -> dict[str, Any]:
    params, k, measurements = SCHEME_ROUNDS[index]
    scheme = TwinRing64(measurement_from_params(params), k)
    ctx = b"twinmpc/v1/task/" + fixed(f"scheme/{index}/task", 32)
    agg_shares = [scheme.agg_init(b"") for _ in range(k)]
    reports = []
    for i, m in enumerate(measurements):
        nonce = fixed(f"scheme/{index}/nonce/{i}", 16)
        rand = fixed(f"scheme/{index}/rand/{i}", scheme.RAND_SIZE)
        public, inputs = scheme.shard(ctx, m, nonce, rand)
        inits = [scheme.verify_init(b"", ctx, j, b"", nonce, public, inputs[j]) for j in range(k)]
        message = scheme.verifier_shares_to_message(ctx, b"", [v for _, v in inits])
        outs = [scheme.verify_next(ctx, state, message) for state, _ in inits]
        for j in range(k):
            scheme.agg_update(b"", agg_shares[j], outs[j])
        reports.append(
            {
                "measurement": m,
                "nonce": nonce.hex(),
                "rand": rand.hex(),
                "public_share": public.hex(),
                "input_shares": [s.hex() for s in inputs],
                "verifier_shares": [v.hex() for _, v in inits],
                "verifier_message": message.hex(),
                "out_shares": [ring.encode(o).hex() for o in outs],
            }
        )
    encoded = [scheme.encode_agg_share(a) for a in agg_shares]
    case: dict[str, Any] = {
        "name": "round",
        "measurement_type": params,
        "shares": k,
        "ctx": ctx.hex(),
        "reports": reports,
        "agg_shares": [a.hex() for a in encoded],
        "agg_result": scheme.unshard(b"", encoded, len(measurements)),
    }
    first = reports[0]
    bad = [
        {
            "name": "bad_leader_share_length",
            "step": "verify_init",
            "error": "DecodeError",
            "agg_id": 0,
            "nonce": first["nonce"],
            "public_share": "",
            "input_share": first["input_shares"][0] + "00" * 8,
        },
        {
            "name": "bad_helper_seed_length",
            "step": "verify_init",
            "error": "DecodeError",
            "agg_id": 1,
            "nonce": first["nonce"],
            "public_share": "",
            "input_share": first["input_shares"][1][:-2],
        },
        {
            "name": "bad_public_share",
            "step": "verify_init",
            "error": "DecodeError",
            "agg_id": 0,
            "nonce": first["nonce"],
            "public_share": "00",
            "input_share": first["input_shares"][0],
        },
        {
            "name": "bad_nonce_mismatch",
            "step": "verifier_shares_to_message",
            "error": "VerifyError",
            "verifier_shares": _nonce_mismatch(scheme, ctx, first),
        },
        {
            "name": "bad_verifier_share_count",
            "step": "verifier_shares_to_message",
            "error": "VerifyError",
            "verifier_shares": first["verifier_shares"][:-1],
        },
        {
            "name": "bad_agg_share_length",
            "step": "unshard",
            "error": "DecodeError",
            "agg_shares": [a.hex() for a in encoded[:-1]] + [encoded[-1][:-8].hex()],
            "num_measurements": len(measurements),
        },
    ]
    if params["type"] == "histogram":
        bad.append(_two_hot_case(scheme, ctx, index))
    return _doc("twinring64-round", f"TwinRing64 {params} with K={k}: shard -> verify -> aggregate -> unshard", [case, *bad])


def _nonce_mismatch(scheme: TwinRing64, ctx: bytes, report: dict[str, Any]) -> list[str]:
    shares = list(report["verifier_shares"])
    other_nonce = bytes(16)
    _, v = scheme.verify_init(b"", ctx, 1, b"", other_nonce, b"", bytes.fromhex(report["input_shares"][1]))
    shares[1] = v.hex()
    return shares


def _two_hot_case(scheme: TwinRing64, ctx: bytes, index: int) -> dict[str, Any]:
    """A malicious client shares a two-hot vector by hand (bypassing Histogram.encode)."""
    nonce = fixed(f"scheme/{index}/two-hot-nonce", 16)
    vector = [0] * scheme.measurement.length
    vector[0] = vector[1] = 1
    seeds = iter(fixed(f"scheme/{index}/two-hot-seed/{j}", 32) for j in range(scheme.SHARES))
    binder = len(ctx).to_bytes(2, "big") + ctx + nonce
    leader, helper_seeds = sharing.split(ring.from_ints(vector), scheme.SHARES, binder, rand=lambda _n: next(seeds))
    inputs = [ring.encode(leader), *helper_seeds]
    verifier = [scheme.verify_init(b"", ctx, j, b"", nonce, b"", s)[1] for j, s in enumerate(inputs)]
    return {
        "name": "bad_two_hot_histogram",
        "step": "verifier_shares_to_message",
        "error": "VerifyError",
        "nonce": nonce.hex(),
        "input_shares": [s.hex() for s in inputs],
        "verifier_shares": [v.hex() for v in verifier],
    }


# --- full client -> aggregators -> collector rounds with sealing ------------------------------------
FULL_ROUNDS: list[tuple[str, dict[str, Any], int, str, list[Any]]] = [
    ("count-k2-x25519", {"type": "count"}, 2, X25519, [1, 1, 0]),
    ("histogram-k3-hybrid", {"type": "histogram", "buckets": 3}, 3, HYBRID, [2, 0, 2]),
]


def full_round_vectors(index: int, store: SealedStore) -> dict[str, Any]:
    label, params, k, suite, measurements = FULL_ROUNDS[index]
    task, agg_keys, collector_key, task_doc = fixed_task(f"full/{label}", params, k, suite)
    scheme = task.scheme
    accs = [agg.Accumulator(task) for _ in range(k)]
    reports = []
    for i, m in enumerate(measurements):
        rand = StreamRand(f"full/{label}/client/{i}")
        report_id = rand(16)
        public, inputs = scheme.shard(task.ctx(), m, report_id, rand(scheme.RAND_SIZE))
        # the same shares as shard_report(task, m, time=T0, rand=StreamRand(...)); sealed via the store
        infos = [input_share_info(task, report_id, T0, j, public) for j in range(k)]
        sealed = tuple(store.seal(agg_keys[j], inputs[j], infos[j]) for j in range(k))
        report = Report(report_id, T0, public, sealed)
        inits = []
        for j in range(k):
            share = agg.open_input_share(task, agg_keys[j], j, report)
            inits.append(agg.verify_init(task, b"", j, report_id, public, share))
        message = agg.verifier_message(task, [v for _, v in inits])
        for j, (state, _) in enumerate(inits):
            accs[j].add([report_id], [agg.verify_finish(task, state, message)])
        reports.append(
            {
                "measurement": m,
                "client_rand_label": f"full/{label}/client/{i}",
                "report_id": report_id.hex(),
                "input_shares": [s.hex() for s in inputs],
                "infos": [x.hex() for x in infos],
                "sealed_shares": [x.hex() for x in sealed],
                "report": report.encode().hex(),
            }
        )
    window = task.window_start(T0)
    sealed_aggs = []
    for j, acc in enumerate(accs):
        info = agg.aggregate_share_info(task, window, j, acc.count, acc.checksum)
        sealed_aggs.append(store.seal(collector_key, scheme.encode_agg_share(acc.agg_share), info).hex())
    case = {
        "name": "round",
        "task": task_doc,
        "aggregator_private_keys": [kp.private_bytes().hex() for kp in agg_keys],
        "collector_private_key": collector_key.private_bytes().hex(),
        "time": T0,
        "reports": reports,
        "accumulators": [acc.encode().hex() for acc in accs],
        "window_start": window,
        "sealed_agg_shares": sealed_aggs,
        "agg_result": scheme.unshard(b"", [scheme.encode_agg_share(a.agg_share) for a in accs], accs[0].count),
    }
    first = reports[0]
    raw = bytes.fromhex(first["report"])
    moved = Report.decode(raw)
    other = Report.decode(bytes.fromhex(reports[1]["report"]))
    bad = [
        {"name": "bad_report_trailing_byte", "step": "Report.decode", "error": "DecodeError", "report": (raw + b"\x00").hex()},
        {"name": "bad_report_truncated", "step": "Report.decode", "error": "DecodeError", "report": raw[:-1].hex()},
        {"name": "bad_report_version", "step": "Report.decode", "error": "DecodeError", "report": (b"\x02" + raw[1:]).hex()},
        {
            "name": "bad_share_moved_to_other_report",
            "step": "open_input_share",
            "error": "SealError",
            "agg_index": 1,
            "report": Report(other.report_id, other.time, other.public_share, (other.sealed_shares[0], moved.sealed_shares[1], *other.sealed_shares[2:])).encode().hex(),
        },
        {
            "name": "bad_share_for_other_aggregator",
            "step": "open_input_share",
            "error": "SealError",
            "agg_index": 0,
            "report": Report(moved.report_id, moved.time, moved.public_share, (moved.sealed_shares[1], *moved.sealed_shares[1:])).encode().hex(),
        },
        {
            "name": "bad_report_time_changed",
            "step": "open_input_share",
            "error": "SealError",
            "agg_index": 0,
            "report": Report(moved.report_id, moved.time + 1, moved.public_share, moved.sealed_shares).encode().hex(),
        },
        {
            "name": "bad_collector_wrong_count",
            "step": "collector.unshard",
            "error": "SealError",
            "report_count": accs[0].count + 1,
        },
    ]
    return _doc("full-round", f"client -> {k} aggregators -> collector, {params}, HPKE suite {suite}", [case, *bad])


def build_vectors(previous_dir: Path | None = OUT_DIR) -> dict[str, dict[str, Any]]:
    """All vector documents by file name; sealed blobs are reused from `previous_dir`."""
    previous: dict[str, dict[str, Any]] = {}
    if previous_dir is not None and previous_dir.is_dir():
        previous = {p.name: json.loads(p.read_text()) for p in sorted(previous_dir.glob("*.json")) if p.name.startswith(OWN_PREFIXES)}
    store = SealedStore(previous)
    out = {
        "Prg_0.json": prg_vectors(),
        "AdditiveSharing_0.json": sharing_vectors(),
        "HpkeBinding_0.json": binding_vectors(),
        "HpkeOpen_0.json": hpke_open_vectors(store),
    }
    for i in range(len(SCHEME_ROUNDS)):
        out[f"TwinRing64_{i}.json"] = scheme_round_vectors(i)
    for i in range(len(FULL_ROUNDS)):
        out[f"FullRound_{i}.json"] = full_round_vectors(i, store)
    return out


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if any file differs")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    docs = build_vectors(args.out)
    stale = [name for name, doc in docs.items() if not (args.out / name).is_file() or (args.out / name).read_text() != render(doc)]
    if args.check:
        for name in stale:
            print(f"out of date: {args.out / name}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (args.out / name).write_text(render(doc))
    print(f"wrote {len(docs)} files to {args.out} ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
