"""Generate our known-answer vectors for Prio3FixedPointBoundedL2Vec (twinmpc-v1).

Same JSON layout as the draft's Prio3 vectors (reports, operations, agg shares,
result), so one replay harness checks both.  Randomness is fixed bytes, so the
output is deterministic; tests/test_prio3_l2.py regenerates and compares.

    python tests/vectors/make_l2_vectors.py            # (re)write the files
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from twinmpc.mpc.prio3 import Prio3FixedPointBoundedL2Vec

OUT_DIR = Path(__file__).resolve().parent / "twinmpc-v1"
CTX = b"twinmpc l2 vectors"
VERIFY_KEY = bytes(range(32))


def _rand(size: int, tag: int) -> bytes:
    return bytes((tag * 7 + i) % 256 for i in range(size))


def _nonce(tag: int) -> bytes:
    return bytes((tag + i) % 256 for i in range(16))


def build_vdaf(params: dict[str, Any]) -> Prio3FixedPointBoundedL2Vec:
    return Prio3FixedPointBoundedL2Vec(
        params["shares"],
        params["length"],
        params["frac_bits"],
        params["chunk_length"],
        params["norm_chunk_length"],
        Fraction(params["max_norm_sq"]),
        params["num_proofs"],
    )


def make_doc(params: dict[str, Any], measurements: list[Any], forged: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the full flow; with `forged`, shard a malicious encoding and stop where it fails."""
    vdaf = build_vdaf(params)
    f = vdaf.field
    doc: dict[str, Any] = dict(params)
    doc.update(ctx=CTX.hex(), verify_key=VERIFY_KEY.hex(), agg_param="", reports=[], operations=[])
    items = [(m, None) for m in measurements] if forged is None else [(None, forged)]
    outs_by_agg: list[list[np.ndarray]] = [[] for _ in range(vdaf.SHARES)]
    for idx, (meas, bad) in enumerate(items):
        nonce, rand = _nonce(idx), _rand(vdaf.RAND_SIZE, idx)
        if bad is None:
            pub, inputs = vdaf.shard(CTX, meas, nonce, rand)
            doc["operations"].append({"operation": "shard", "report_index": idx, "success": True})
        else:
            enc = vdaf.valid.encode_fixed(bad["fixed_point"], bad["claimed_norm"])
            if bad.get("bit_index") is not None:
                enc = enc.copy()
                enc[bad["bit_index"]] = f.const(bad["bit_value"])[0]
            pub, inputs = vdaf.shard_encoded(CTX, enc, nonce, rand)
        report: dict[str, Any] = {
            "measurement": None if meas is None else [str(Fraction(x)) for x in meas],
            "nonce": nonce.hex(),
            "rand": rand.hex(),
            "public_share": pub.hex(),
            "input_shares": [s.hex() for s in inputs],
        }
        inits = []
        for j in range(vdaf.SHARES):
            inits.append(vdaf.verify_init(VERIFY_KEY, CTX, j, b"", nonce, pub, inputs[j]))
            doc["operations"].append({"operation": "verify_init", "aggregator_id": j, "report_index": idx, "success": True})
        report["verifier_shares"] = [[v.hex() for _, v in inits]]
        if bad is not None:
            report.update(verifier_messages=[], out_shares=[], forged=bad)
            doc["operations"].append({"operation": "verifier_shares_to_message", "report_index": idx, "round": 0, "success": False})
            doc["reports"].append(report)
            doc.update(agg_shares=[], agg_result=None)
            return doc
        msg = vdaf.verifier_shares_to_message(CTX, b"", [v for _, v in inits])
        doc["operations"].append({"operation": "verifier_shares_to_message", "report_index": idx, "round": 0, "success": True})
        report["verifier_messages"] = [msg.hex()]
        outs = []
        for j, (state, _) in enumerate(inits):
            out = vdaf.verify_next(CTX, state, msg)
            outs.append(vdaf.agg_field.encode_vec(out).hex())
            outs_by_agg[j].append(out)
            doc["operations"].append({"operation": "verify_next", "aggregator_id": j, "report_index": idx, "round": 1, "success": True})
        report["out_shares"] = outs
        doc["reports"].append(report)
    agg_shares = []
    for j in range(vdaf.SHARES):
        acc = vdaf.agg_init(b"")
        for out in outs_by_agg[j]:
            acc = vdaf.agg_update(b"", acc, out)
        agg_shares.append(vdaf.encode_agg_share(acc))
        doc["operations"].append({"operation": "aggregate", "aggregator_id": j, "success": True})
    doc["agg_shares"] = [a.hex() for a in agg_shares]
    doc["agg_result"] = vdaf.unshard(b"", agg_shares, len(items))
    doc["operations"].append({"operation": "unshard", "success": True})
    return doc


P0 = {"shares": 2, "length": 4, "frac_bits": 15, "chunk_length": 8, "norm_chunk_length": 2,
      "max_norm_sq": "1", "num_proofs": 1}
P1 = {"shares": 3, "length": 10, "frac_bits": 7, "chunk_length": 6, "norm_chunk_length": 3,
      "max_norm_sq": "1/2", "num_proofs": 2}


def all_docs() -> dict[str, dict[str, Any]]:
    """Every vector file name -> its content."""
    return {
        "Prio3FixedPointBoundedL2Vec_0": make_doc(P0, [
            [0.5, -0.5, 0.25, -0.125],
            [-1, 0, 0, 0],
            [0.1, 0.2, -0.3, 0.4],  # rounded to 2^-15 by the client
        ]),
        "Prio3FixedPointBoundedL2Vec_1": make_doc(P1, [
            [0.25, -0.25, 0.125, 0, 0, 0, 0, -0.5, 0.0078125, 0],
            [0] * 10,
        ]),
        # Malicious: |x|^2 = 2 * (30000/2^15)^2 ~ 1.68 > 1, but claims the bound 2^30.
        "Prio3FixedPointBoundedL2Vec_bad_norm": make_doc(P0, [], forged={
            "fixed_point": [30000, -30000, 0, 0], "claimed_norm": 2**30, "bit_index": None, "bit_value": None,
        }),
        # Malicious: a "bit" of entry 0 set to 2 (entry value outside the fixed-point range).
        "Prio3FixedPointBoundedL2Vec_bad_bit": make_doc(P0, [], forged={
            "fixed_point": [0, 0, 0, 0], "claimed_norm": 0, "bit_index": 3, "bit_value": 2,
        }),
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, doc in all_docs().items():
        (OUT_DIR / f"{name}.json").write_text(render(doc))
        print(f"wrote {OUT_DIR / name}.json")


if __name__ == "__main__":
    main()
