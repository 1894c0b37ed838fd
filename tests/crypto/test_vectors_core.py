"""One harness for the core library's known-answer vectors, tests/vectors/twinmpc-v1.

Every case of every file produced by tests/vectors/make_core_vectors.py runs
here, dispatched on the file's ``kind``; ``bad_*`` cases must raise the named
error at the named step.  A last test re-runs the generator and fails if the
committed files drifted from the code (or the code from the files).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from tests.paths import REPO, OUR_VECTORS, VDAF_VECTORS  # noqa: F401
import pytest

from twinmpc.crypto import prg, ring, seal, sharing
from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc import aggregator as agg
from twinmpc.mpc import collector, errors
from twinmpc.mpc.client import input_share_info, shard_report
from twinmpc.mpc.measurements import measurement_from_params
from twinmpc.mpc.report import Report
from twinmpc.mpc.ring_vdaf import TwinRing64
from twinmpc.mpc.task import Task

VECTOR_DIR = OUR_VECTORS
GENERATOR = REPO / "tests" / "vectors" / "make_core_vectors.py"
KINDS = {"prg", "additive-sharing", "hpke-binding", "hpke-open", "twinring64-round", "full-round"}


def _load() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for path in sorted(VECTOR_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        if doc.get("kind") not in KINDS:  # other schemes' vectors (Prio3*) have their own harness
            continue
        assert doc["version"] == "twinmpc-v1"
        out += [(path.name, doc, case) for case in doc["cases"]]
    return out


CASES = _load()


def error_class(name: str) -> type[BaseException]:
    return getattr(errors, name, None) or {"ValueError": ValueError, "TypeError": TypeError}[name]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def stream_rand(label: str):
    """The generator's client `rand`: one SHAKE128 stream, read sequentially."""
    pos = 0

    def rand(n: int) -> bytes:
        nonlocal pos
        out = hashlib.shake_128(b"twinmpc-v1 test vector/" + label.encode()).digest(pos + n)[pos:]
        pos += n
        return out

    return rand


# --- per-kind runners -----------------------------------------------------------------------------
def run_prg(case: dict[str, Any]) -> None:
    seed, dst, binder = h(case["seed"]), h(case["dst"]), h(case["binder"])
    if case["name"].startswith("bad_"):
        assert case["step"] == "keystream"
        prg.keystream(seed, dst, binder, case["nbytes"])
    elif "keystream" in case:
        assert prg.keystream(seed, dst, binder, case["nbytes"]).hex() == case["keystream"]
    elif "ring" in case:
        assert ring.encode(prg.expand_ring(seed, dst, binder, case["n"])).hex() == case["ring"]
    else:
        got = prg.expand_field64(seed, dst, binder, case["n"])
        assert [str(int(v)) for v in got] == case["field64"]


def run_sharing(case: dict[str, Any]) -> None:
    if case["name"].startswith("bad_"):
        if case["step"] == "helper_binder":
            sharing.helper_binder(h(case["binder"]), case["agg_index"])
        else:
            assert case["step"] == "split"
            sharing.split(ring.from_ints([int(v) for v in case["x"]]), case["shares"], h(case["binder"]))
        return
    x = ring.from_ints([int(v) for v in case["x"]])
    seeds = iter(h(s) for s in case["seeds"])
    binder = h(case["binder"])
    leader, got_seeds = sharing.split(x, case["shares"], binder, rand=lambda _n: next(seeds))
    assert ring.encode(leader).hex() == case["leader"]
    assert [s.hex() for s in got_seeds] == case["seeds"]
    expansions = [sharing.expand_helper_share(s, binder, j, x.size) for j, s in enumerate(got_seeds, start=1)]
    assert [ring.encode(e).hex() for e in expansions] == case["helper_expansions"]
    assert sharing.combine([leader, *expansions]).tolist() == x.tolist()


def run_binding(case: dict[str, Any]) -> None:
    name = case["name"]
    if name == "binding_generic":
        assert seal.binding(case["label"], *(h(p) for p in case["parts"])).hex() == case["info"]
    elif name.startswith("input_share_info"):
        task = Task.from_dict(case["task"])
        assert task.task_id.hex() == case["task_id"]
        info = input_share_info(task, h(case["report_id"]), case["time"], case["agg_index"], h(case["public_share"]))
        assert info.hex() == case["info"]
    elif name == "aggregate_share_info":
        task = Task.from_dict(case["task"])
        assert task.task_id.hex() == case["task_id"]
        info = agg.aggregate_share_info(task, case["window_start"], case["agg_index"], case["count"], h(case["checksum"]))
        assert info.hex() == case["info"]
    else:
        assert agg.report_checksum([h(r) for r in case["report_ids"]]).hex() == case["checksum"]


def run_hpke_open(case: dict[str, Any]) -> None:
    kp = HpkeKeypair.from_private_bytes(case["config_id"], case["suite"], h(case["private_key"]))
    assert kp.config.encode().hex() == case["hpke_config"]
    opened = seal.open_sealed(kp, h(case["sealed"]), h(case["info"]))  # raises for bad_* cases
    assert opened.hex() == case["plaintext"]


def run_scheme_round(doc: dict[str, Any], case: dict[str, Any]) -> None:
    main = doc["cases"][0]
    scheme = TwinRing64(measurement_from_params(main["measurement_type"]), main["shares"])
    ctx = h(main["ctx"])
    if case["name"].startswith("bad_"):
        step = case["step"]
        if step == "verify_init":
            scheme.verify_init(b"", ctx, case["agg_id"], b"", h(case["nonce"]), h(case["public_share"]), h(case["input_share"]))
        elif step == "verifier_shares_to_message":
            if "input_shares" in case:  # hand-crafted shares: the verifier shares follow from them
                got = [scheme.verify_init(b"", ctx, j, b"", h(case["nonce"]), b"", h(s))[1].hex() for j, s in enumerate(case["input_shares"])]
                assert got == case["verifier_shares"]
            scheme.verifier_shares_to_message(ctx, b"", [h(v) for v in case["verifier_shares"]])
        else:
            assert step == "unshard"
            scheme.unshard(b"", [h(a) for a in case["agg_shares"]], case["num_measurements"])
        return
    agg_shares = [scheme.agg_init(b"") for _ in range(scheme.SHARES)]
    for r in case["reports"]:
        nonce = h(r["nonce"])
        public, inputs = scheme.shard(ctx, r["measurement"], nonce, h(r["rand"]))
        assert public.hex() == r["public_share"]
        assert [s.hex() for s in inputs] == r["input_shares"]
        inits = [scheme.verify_init(b"", ctx, j, b"", nonce, public, s) for j, s in enumerate(inputs)]
        assert [v.hex() for _, v in inits] == r["verifier_shares"]
        message = scheme.verifier_shares_to_message(ctx, b"", [v for _, v in inits])
        assert message.hex() == r["verifier_message"]
        outs = [scheme.verify_next(ctx, state, message) for state, _ in inits]
        assert [ring.encode(o).hex() for o in outs] == r["out_shares"]
        for j, o in enumerate(outs):
            scheme.agg_update(b"", agg_shares[j], o)
    encoded = [scheme.encode_agg_share(a) for a in agg_shares]
    assert [a.hex() for a in encoded] == case["agg_shares"]
    assert scheme.unshard(b"", encoded, len(case["reports"])) == case["agg_result"]


def run_full_round(doc: dict[str, Any], case: dict[str, Any]) -> None:
    main = doc["cases"][0]
    task = Task.from_dict(main["task"])
    suite = task.aggregators[0].hpke_config.suite.name
    agg_keys = [HpkeKeypair.from_private_bytes(j, suite, h(k)) for j, k in enumerate(main["aggregator_private_keys"])]
    collector_key = HpkeKeypair.from_private_bytes(0, suite, h(main["collector_private_key"]))
    assert [kp.config for kp in agg_keys] == [a.hpke_config for a in task.aggregators]
    assert collector_key.config == task.collector_hpke_config
    name = case["name"]
    if name.startswith("bad_"):
        if case["step"] == "Report.decode":
            Report.decode(h(case["report"]))
        elif case["step"] == "open_input_share":
            j = case["agg_index"]
            agg.open_input_share(task, agg_keys[j], j, Report.decode(h(case["report"])))
        else:
            assert case["step"] == "collector.unshard"
            acc0 = agg.Accumulator.decode(task, h(main["accumulators"][0]))
            sealed = [h(s) for s in main["sealed_agg_shares"]]
            collector.unshard(task, collector_key, main["window_start"], case["report_count"], acc0.checksum, sealed)
        return
    accs = [agg.Accumulator(task) for _ in agg_keys]
    for r in main["reports"]:
        # the client path with the same rand: same report id and input shares (sealing is randomised)
        fresh = shard_report(task, r["measurement"], time=main["time"], rand=stream_rand(r["client_rand_label"]))
        assert fresh.report_id.hex() == r["report_id"]
        assert [agg.open_input_share(task, kp, j, fresh).hex() for j, kp in enumerate(agg_keys)] == r["input_shares"]
        # the stored report: exact bytes, opens under the fixed keys to the same shares
        report = Report.decode(h(r["report"]))
        assert report.encode().hex() == r["report"]
        assert [s.hex() for s in report.sealed_shares] == r["sealed_shares"]
        assert [input_share_info(task, report.report_id, report.time, j, report.public_share).hex() for j in range(len(agg_keys))] == r["infos"]
        shares = [agg.open_input_share(task, kp, j, report) for j, kp in enumerate(agg_keys)]
        assert [s.hex() for s in shares] == r["input_shares"]
        inits = [agg.verify_init(task, b"", j, report.report_id, report.public_share, s) for j, s in enumerate(shares)]
        message = agg.verifier_message(task, [v for _, v in inits])
        for j, (state, _) in enumerate(inits):
            accs[j].add([report.report_id], [agg.verify_finish(task, state, message)])
    assert [a.encode().hex() for a in accs] == main["accumulators"]
    window = task.window_start(main["time"])
    assert window == main["window_start"]
    result = collector.unshard(task, collector_key, window, accs[0].count, accs[0].checksum, [h(s) for s in main["sealed_agg_shares"]])
    assert result.result == main["agg_result"]
    assert result.report_count == len(main["reports"])


RUNNERS = {
    "prg": lambda doc, case: run_prg(case),
    "additive-sharing": lambda doc, case: run_sharing(case),
    "hpke-binding": lambda doc, case: run_binding(case),
    "hpke-open": lambda doc, case: run_hpke_open(case),
    "twinring64-round": run_scheme_round,
    "full-round": run_full_round,
}


@pytest.mark.parametrize(("file", "doc", "case"), CASES, ids=[f"{f}::{c['name']}" for f, _, c in CASES])
def test_vector(file: str, doc: dict[str, Any], case: dict[str, Any]) -> None:
    runner = RUNNERS[doc["kind"]]
    if case["name"].startswith("bad_"):
        with pytest.raises(error_class(case["error"])):
            runner(doc, case)
    else:
        runner(doc, case)


def test_every_kind_has_good_and_bad_cases() -> None:
    seen: dict[str, set[bool]] = {}
    for _, doc, case in CASES:
        seen.setdefault(doc["kind"], set()).add(case["name"].startswith("bad_"))
    assert set(seen) == KINDS
    assert all(flags == {True, False} for kind, flags in seen.items() if kind != "hpke-binding")


def test_bad_cases_name_step_and_error() -> None:
    for file, _, case in CASES:
        if case["name"].startswith("bad_"):
            assert case["step"] and error_class(case["error"]), f"{file}::{case['name']}"


def test_generator_reproduces_committed_files() -> None:
    spec = importlib.util.spec_from_file_location("make_core_vectors", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    docs = module.build_vectors(VECTOR_DIR)
    for name, doc in docs.items():
        assert (VECTOR_DIR / name).read_text() == module.render(doc), f"{name} drifted: run python {GENERATOR.relative_to(GENERATOR.parents[2])}"


def test_protocol_doc_examples_are_the_vectors() -> None:
    """docs/protocol.md quotes vector bytes; fail when they go stale."""
    doc = (REPO / "docs" / "protocol.md").read_text()
    flat = doc.replace(" ", "")
    prg_case = json.loads((VECTOR_DIR / "Prg_0.json").read_text())["cases"][0]
    assert prg_case["keystream"] in flat
    ring_case = json.loads((VECTOR_DIR / "TwinRing64_0.json").read_text())["cases"][0]
    first = ring_case["reports"][0]
    for value in (ring_case["ctx"][32:], first["nonce"], first["rand"], first["input_shares"][0], first["out_shares"][1], first["verifier_shares"][0]):
        assert value in flat, value
    full = json.loads((VECTOR_DIR / "FullRound_0.json").read_text())["cases"][0]
    assert full["accumulators"][0][16:80] in flat and full["accumulators"][0][80:] in flat  # checksum, aggregate share
    binding = json.loads((VECTOR_DIR / "HpkeBinding_0.json").read_text())["cases"][2]
    assert binding["name"] == "input_share_info_1"
    assert binding["task_id"] in flat and binding["report_id"] in flat
