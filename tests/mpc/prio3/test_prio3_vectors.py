"""Conformance of mpc.prio3 to the official draft-irtf-cfrg-vdaf-18 vectors, plus rejection paths.

One harness replays every shared/vdaf-vectors/vdaf/Prio3*.json: it reproduces
each field (public share, input shares, verifier shares and messages, output
shares, aggregate shares, result) and, for *_bad_* vectors, expects the error
exactly at the operation marked ``"success": false``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tests.paths import REPO, OUR_VECTORS, VDAF_VECTORS  # noqa: F401
import pytest

from twinmpc.crypto.field import Field64, Field64Small, Field128
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.field_native import KERNEL_ENV, Field64Native, Field128Native, native_built
from twinmpc.mpc.errors import (
    DecodeError,
    InvalidMeasurement,
    InvalidReport,
    InvalidTask,
    VerifyError,
)
from twinmpc.mpc.prio3 import (
    Prio3Count,
    Prio3Histogram,
    Prio3MultihotCountVec,
    Prio3Sum,
    Prio3SumVec,
    Prio3SumVecWithMultiproof,
    prio3_from_params,
)
from twinmpc.mpc.prio3.circuits import Count, Histogram, MultihotCountVec, Sum, SumVec
from twinmpc.mpc.prio3.flp import PolyEval, Valid
from twinmpc.mpc.prio3.params import field64_backend
from twinmpc.mpc.prio3.prio3 import Prio3
from twinmpc.mpc.vdaf import Vdaf

VECTOR_DIR = VDAF_VECTORS / "vdaf"
VECTOR_FILES = sorted(VECTOR_DIR.glob("Prio3*.json")) if VECTOR_DIR.is_dir() else []


def _require_vectors() -> None:
    if VECTOR_FILES:
        return
    reason = f"official VDAF vectors not found under {VECTOR_DIR}"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip("LOUD SKIP: " + reason)


class HigherDegree(Valid[int, int]):
    """Test-only circuit of the draft's Prio3HigherDegree vectors: PolyEval(x^3 - 3x^2 + 2x), x in {0,1,2}."""

    MEAS_LEN = 1
    JOINT_RAND_LEN = 0
    OUTPUT_LEN = 1
    EVAL_OUTPUT_LEN = 1

    def __init__(self) -> None:
        self.field = field64_backend(1)  # follows the kernel selection, like the draft's variants
        self.GADGETS = [PolyEval([0, 2, -3, 1])]
        self.GADGET_CALLS = [1]

    def wire_inputs(self, meas, joint_rand, num_shares):  # type: ignore[no-untyped-def]
        return [meas.reshape(1, -1)]

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):  # type: ignore[no-untyped-def]
        return gadget_outputs[0]

    def encode(self, measurement: int) -> np.ndarray:
        return self.field.from_ints([measurement])

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return meas

    def decode(self, output: np.ndarray, num_measurements: int) -> int:
        return self.field.to_ints(output)[0]


def build(name: str, doc: dict[str, Any]) -> Prio3[Any, Any]:
    kind = name.split("_")[0]
    shares = doc["shares"]
    if kind == "Prio3HigherDegree":
        return Prio3(shares, HigherDegree(), 1, 0xFFFFFFFF)
    if kind == "Prio3SumVecWithMultiproof":
        # The draft's vectors: Field64 with 3 proofs.
        return Prio3SumVecWithMultiproof(shares, doc["length"], doc["max_measurement"], doc["chunk_length"], 3, Field64)
    params = {k: doc[k] for k in ("length", "max_measurement", "max_weight", "chunk_length") if k in doc}
    return prio3_from_params(kind, shares, **params)  # type: ignore[return-value]


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_official_vector(path: Path, kernel: str) -> None:
    """Every official vector, byte for byte, through both the native and the numpy field kernels."""
    _require_vectors()
    doc = json.loads(path.read_text())
    vdaf = build(path.stem, doc)
    assert isinstance(vdaf, Vdaf)
    assert vdaf.field.NATIVE == (kernel == "native")
    replay_vector(vdaf, doc, bad="_bad_" in path.stem)


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_official_vector_through_the_fused_share_kernel(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every official vector again with the compiled fused share kernel forced on (it normally
    serves measurements of FUSED_MIN_MEAS_LEN elements and more)."""
    _require_vectors()
    if not native_built():
        pytest.skip("LOUD SKIP: twinmpc.crypto._field_kernel is not built (pip install -e .)")
    from twinmpc.mpc.prio3 import base

    monkeypatch.setenv(KERNEL_ENV, "native")
    monkeypatch.setattr(base, "FUSED_MIN_MEAS_LEN", 0)
    doc = json.loads(path.read_text())
    vdaf = build(path.stem, doc)
    assert vdaf._fused
    replay_vector(vdaf, doc, bad="_bad_" in path.stem)


def replay_vector(vdaf: Prio3[Any, Any], doc: dict[str, Any], bad: bool) -> None:
    """Run every operation of a vector document, comparing each produced field."""
    ctx = bytes.fromhex(doc["ctx"])
    verify_key = bytes.fromhex(doc["verify_key"])
    agg_param = bytes.fromhex(doc["agg_param"])
    reports = doc["reports"]
    states: dict[int, list[Any]] = {i: [None] * vdaf.SHARES for i in range(len(reports))}
    vshares: dict[int, list[bytes | None]] = {i: [None] * vdaf.SHARES for i in range(len(reports))}
    messages: dict[int, bytes] = {i: bytes.fromhex(r["verifier_messages"][0]) for i, r in enumerate(reports) if r["verifier_messages"]}
    outs: dict[int, list[np.ndarray | None]] = {i: [None] * vdaf.SHARES for i in range(len(reports))}
    agg_shares: list[bytes | None] = [None] * vdaf.SHARES
    ops_seen = 0

    for op in doc["operations"]:
        kind, ok = op["operation"], op["success"]
        i = op.get("report_index")
        r = reports[i] if i is not None else None
        if kind == "shard":
            pub, inputs = vdaf.shard(ctx, r["measurement"], bytes.fromhex(r["nonce"]), bytes.fromhex(r["rand"]))
            assert ok
            assert pub.hex() == r["public_share"]
            assert [s.hex() for s in inputs] == r["input_shares"]
        elif kind == "verify_init":
            j = op["aggregator_id"]
            args = (verify_key, ctx, j, agg_param, bytes.fromhex(r["nonce"]), bytes.fromhex(r["public_share"]),
                    bytes.fromhex(r["input_shares"][j]))
            if not ok:
                with pytest.raises(InvalidReport):
                    vdaf.verify_init(*args)
                continue
            state, vshare = vdaf.verify_init(*args)
            assert vshare.hex() == r["verifier_shares"][0][j]
            assert "redacted" in repr(state)
            states[i][j], vshares[i][j] = state, vshare
        elif kind == "verifier_shares_to_message":
            shares_in = [bytes.fromhex(h) for h in r["verifier_shares"][0]]
            if not ok:
                with pytest.raises(VerifyError):
                    vdaf.verifier_shares_to_message(ctx, agg_param, shares_in)
                continue
            msg = vdaf.verifier_shares_to_message(ctx, agg_param, shares_in)
            assert msg.hex() == r["verifier_messages"][0]
            messages[i] = msg
        elif kind == "verify_next":
            j = op["aggregator_id"]
            if not ok:
                with pytest.raises(VerifyError):
                    vdaf.verify_next(ctx, states[i][j], messages[i])
                continue
            out = vdaf.verify_next(ctx, states[i][j], messages[i])
            assert vdaf.agg_field.encode_vec(out).hex() == r["out_shares"][j]
            outs[i][j] = out
        elif kind == "aggregate":
            j = op["aggregator_id"]
            acc = vdaf.agg_init(agg_param)
            for k in range(len(reports)):
                acc = vdaf.agg_update(agg_param, acc, outs[k][j])
            enc = vdaf.encode_agg_share(acc)
            assert enc.hex() == doc["agg_shares"][j]
            assert np.array_equal(vdaf.decode_agg_share(enc), acc)
            agg_shares[j] = enc
        elif kind == "unshard":
            result = vdaf.unshard(agg_param, agg_shares, len(reports))
            assert result == doc["agg_result"]
            merged = vdaf.merge(agg_param, [vdaf.decode_agg_share(a) for a in agg_shares])
            assert vdaf.flp.decode(merged, len(reports)) == doc["agg_result"]
        else:
            pytest.fail(f"unknown operation {kind}")
        ops_seen += 1
    assert ops_seen > 0
    assert bad == any(not op["success"] for op in doc["operations"])


LIMB_FAMILIES = {"Prio3SumVec": 3, "Prio3Histogram": 4, "Prio3MultihotCountVec": 5}


@pytest.mark.parametrize(
    "path", [p for p in VECTOR_FILES if p.stem.split("_")[0] in LIMB_FAMILIES], ids=lambda p: p.stem
)
def test_official_vector_on_limb_backend(path: Path) -> None:
    """The Field128 families again, forced onto the uint64-limb backend used for long circuits."""
    _require_vectors()
    doc = json.loads(path.read_text())
    kind = path.stem.split("_")[0]
    if kind == "Prio3SumVec":
        valid: Any = SumVec(Field128Limbs, doc["length"], doc["max_measurement"], doc["chunk_length"])
    elif kind == "Prio3Histogram":
        valid = Histogram(Field128Limbs, doc["length"], doc["chunk_length"])
    else:
        valid = MultihotCountVec(Field128Limbs, doc["length"], doc["max_weight"], doc["chunk_length"])
    replay_vector(Prio3(doc["shares"], valid, 1, LIMB_FAMILIES[kind]), doc, bad="_bad_" in path.stem)


F64_FAMILIES = {"Prio3Count", "Prio3Sum", "Prio3SumVecWithMultiproof", "Prio3HigherDegree"}


@pytest.mark.parametrize(
    "path", [p for p in VECTOR_FILES if p.stem.split("_")[0] in F64_FAMILIES], ids=lambda p: p.stem
)
def test_official_vector_on_uint64_backend(path: Path) -> None:
    """The Field64 families again, forced onto the uint64 backend used for long circuits."""
    _require_vectors()
    doc = json.loads(path.read_text())
    kind = path.stem.split("_")[0]
    if kind == "Prio3Count":
        vdaf = Prio3(doc["shares"], Count(Field64), 1, 1)
    elif kind == "Prio3Sum":
        vdaf = Prio3(doc["shares"], Sum(Field64, doc["max_measurement"]), 1, 2)
    elif kind == "Prio3SumVecWithMultiproof":
        vdaf = Prio3(doc["shares"], SumVec(Field64, doc["length"], doc["max_measurement"], doc["chunk_length"]), 3,
                     0xFFFFFFFF)
    else:
        hd = HigherDegree()
        hd.field = Field64
        vdaf = Prio3(doc["shares"], hd, 1, 0xFFFFFFFF)
    assert vdaf.field is Field64
    replay_vector(vdaf, doc, bad="_bad_" in path.stem)


def test_backend_selection_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the numpy path the backend follows the circuit size; the native kernel serves every size."""
    monkeypatch.setenv(KERNEL_ENV, "numpy")
    long_vec = Prio3SumVec(2, 1000, 255, 89)
    assert long_vec.field is Field128Limbs
    assert long_vec.agg_field is Field128 and long_vec.agg_init(b"").dtype == object
    assert Prio3Histogram(2, 100, 10).field is Field128
    assert Prio3Count(2).field is Field64Small
    assert Prio3SumVecWithMultiproof(2, 1000, 255, 89).field is Field64
    if native_built():
        monkeypatch.setenv(KERNEL_ENV, "native")
        assert Prio3SumVec(2, 1000, 255, 89).field is Field128Native is Prio3Histogram(2, 100, 10).field
        assert Prio3Count(2).field is Field64Native is Prio3SumVecWithMultiproof(2, 1000, 255, 89).field
        assert Prio3Histogram(2, 4, 2).agg_field is Field128Native


def test_kernel_selection_rejects_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_ENV, "fortran")
    with pytest.raises(ValueError):
        Prio3Count(2)


def test_every_vector_family_is_covered() -> None:
    _require_vectors()
    families = {p.stem.split("_")[0] for p in VECTOR_FILES}
    assert families == {
        "Prio3Count", "Prio3Sum", "Prio3SumVec", "Prio3Histogram", "Prio3MultihotCountVec",
        "Prio3SumVecWithMultiproof", "Prio3HigherDegree",
    }


# --------------------------------------------------------------------------- rejection paths

CTX = b"twinmpc test"
NONCE = bytes(range(16))
KEY = bytes(32)


def _run(vdaf: Prio3[Any, Any], measurement: Any, seed: int = 1) -> tuple[bytes, list[bytes]]:
    rand = bytes((seed + i) % 256 for i in range(vdaf.RAND_SIZE))
    return vdaf.shard(CTX, measurement, NONCE, rand)


@pytest.fixture(scope="module")
def hist() -> Prio3Histogram:
    return Prio3Histogram(2, 5, 2)


def test_roundtrip_three_aggregators() -> None:
    vdaf = Prio3MultihotCountVec(3, 6, 3, 2)
    shares = [vdaf.agg_init(b"") for _ in range(3)]
    measurements = [[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    for n, m in enumerate(measurements):
        pub, inputs = _run(vdaf, m, seed=n)
        inits = [vdaf.verify_init(KEY, CTX, j, b"", NONCE, pub, inputs[j]) for j in range(3)]
        msg = vdaf.verifier_shares_to_message(CTX, b"", [v for _, v in inits])
        for j in range(3):
            shares[j] = vdaf.agg_update(b"", shares[j], vdaf.verify_next(CTX, inits[j][0], msg))
    result = vdaf.unshard(b"", [vdaf.encode_agg_share(s) for s in shares], 3)
    assert result == [2, 1, 2, 0, 0, 1]


def test_joint_randomness_mismatch_rejected(hist: Prio3Histogram) -> None:
    pub, inputs = _run(hist, 3)
    inits = [hist.verify_init(KEY, CTX, j, b"", NONCE, pub, inputs[j]) for j in range(2)]
    msg = hist.verifier_shares_to_message(CTX, b"", [v for _, v in inits])
    forged = bytes([msg[0] ^ 1]) + msg[1:]
    with pytest.raises(VerifyError):
        hist.verify_next(CTX, inits[0][0], forged)


def test_tampered_leader_share_fails_proof(hist: Prio3Histogram) -> None:
    pub, inputs = _run(hist, 1)
    leader = bytearray(inputs[0])
    leader[0] ^= 1
    inits = [hist.verify_init(KEY, CTX, 0, b"", NONCE, pub, bytes(leader)),
             hist.verify_init(KEY, CTX, 1, b"", NONCE, pub, inputs[1])]
    with pytest.raises(VerifyError):
        hist.verifier_shares_to_message(CTX, b"", [v for _, v in inits])


def test_wrong_context_fails(hist: Prio3Histogram) -> None:
    pub, inputs = _run(hist, 1)
    inits = [hist.verify_init(KEY, b"other", j, b"", NONCE, pub, inputs[j]) for j in range(2)]
    with pytest.raises(VerifyError):
        hist.verifier_shares_to_message(b"other", b"", [v for _, v in inits])


@pytest.mark.parametrize("which", ["public", "leader", "helper", "leader_trailing", "nonce"])
def test_decoders_reject_wrong_lengths(hist: Prio3Histogram, which: str) -> None:
    pub, inputs = _run(hist, 0)
    agg_id, nonce = 0, NONCE
    if which == "public":
        pub = pub[:-1]
    elif which == "leader":
        inputs[0] = inputs[0][:-1]
    elif which == "helper":
        agg_id = 1
        inputs[1] = inputs[1] + b"\x00"
    elif which == "leader_trailing":
        inputs[0] = inputs[0] + b"\x00"
    else:
        nonce = NONCE[:-1]
    with pytest.raises(DecodeError):
        hist.verify_init(KEY, CTX, agg_id, b"", nonce, pub, inputs[agg_id])


def test_non_canonical_field_element_rejected() -> None:
    vdaf = Prio3Count(2)
    pub, inputs = _run(vdaf, 1)
    bad = (Field64.MODULUS).to_bytes(8, "little") + inputs[0][8:]
    with pytest.raises(DecodeError):
        vdaf.verify_init(KEY, CTX, 0, b"", NONCE, pub, bad)


def test_count_public_share_must_be_empty() -> None:
    vdaf = Prio3Count(2)
    _pub, inputs = _run(vdaf, 1)
    with pytest.raises(DecodeError):
        vdaf.verify_init(KEY, CTX, 0, b"", NONCE, b"\x00", inputs[0])


def test_verifier_share_and_message_decoding(hist: Prio3Histogram) -> None:
    pub, inputs = _run(hist, 2)
    inits = [hist.verify_init(KEY, CTX, j, b"", NONCE, pub, inputs[j]) for j in range(2)]
    with pytest.raises(DecodeError):
        hist.verifier_shares_to_message(CTX, b"", [inits[0][1], inits[1][1][:-1]])
    with pytest.raises(DecodeError):
        hist.verifier_shares_to_message(CTX, b"", [inits[0][1]])
    msg = hist.verifier_shares_to_message(CTX, b"", [v for _, v in inits])
    with pytest.raises(DecodeError):
        hist.verify_next(CTX, inits[0][0], msg + b"\x00")
    count = Prio3Count(2)
    cp, ci = _run(count, 0)
    st, _ = count.verify_init(KEY, CTX, 0, b"", NONCE, cp, ci[0])
    with pytest.raises(DecodeError):
        count.verify_next(CTX, st, b"\x01")


def test_agg_param_must_be_empty(hist: Prio3Histogram) -> None:
    pub, inputs = _run(hist, 2)
    with pytest.raises(DecodeError):
        hist.verify_init(KEY, CTX, 0, b"x", NONCE, pub, inputs[0])
    with pytest.raises(DecodeError):
        hist.agg_init(b"x")


def test_agg_share_decoding(hist: Prio3Histogram) -> None:
    enc = hist.encode_agg_share(hist.agg_init(b""))
    assert len(enc) == 5 * Field128.ENCODED_SIZE
    with pytest.raises(DecodeError):
        hist.decode_agg_share(enc + b"\x00")
    with pytest.raises(DecodeError):
        hist.decode_agg_share(enc[:-16] + (Field128.MODULUS).to_bytes(16, "little"))
    with pytest.raises(DecodeError):
        hist.unshard(b"", [enc], 1)


@pytest.mark.parametrize(
    "factory, measurement",
    [
        (lambda: Prio3Count(2), 2),
        (lambda: Prio3Count(2), "1"),
        (lambda: Prio3Sum(2, 10), 11),
        (lambda: Prio3Sum(2, 10), -1),
        (lambda: Prio3SumVec(2, 3, 7, 2), [1, 2]),
        (lambda: Prio3SumVec(2, 3, 7, 2), [1, 2, 8]),
        (lambda: Prio3Histogram(2, 4, 2), 4),
        (lambda: Prio3MultihotCountVec(2, 4, 2, 2), [1, 1, 1, 0]),
        (lambda: Prio3MultihotCountVec(2, 4, 2, 2), [2, 0, 0, 0]),
    ],
)
def test_shard_rejects_invalid_measurements(factory: Any, measurement: Any) -> None:
    vdaf = factory()
    with pytest.raises(InvalidMeasurement):
        _run(vdaf, measurement)


def test_shard_rejects_bad_nonce_and_rand() -> None:
    vdaf = Prio3Count(2)
    with pytest.raises(ValueError):
        vdaf.shard(CTX, 1, NONCE[:15], bytes(vdaf.RAND_SIZE))
    with pytest.raises(ValueError):
        vdaf.shard(CTX, 1, NONCE, bytes(vdaf.RAND_SIZE - 1))


@pytest.mark.parametrize(
    "name, shares, params",
    [
        ("Prio3Count", 1, {}),
        ("Prio3Count", 256, {}),
        ("Prio3Sum", 2, {"max_measurement": 0}),
        ("Prio3Sum", 2, {"max_measurement": 2**64}),
        ("Prio3Sum", 2, {}),
        ("Prio3Sum", 2, {"max_measurement": 5, "bits": 3}),
        ("Prio3SumVec", 2, {"length": 0, "max_measurement": 1, "chunk_length": 1}),
        ("Prio3Histogram", 2, {"length": 4, "chunk_length": 0}),
        ("Prio3MultihotCountVec", 2, {"length": 4, "max_weight": 5, "chunk_length": 2}),
        ("Prio3SumVecWithMultiproof", 2, {"length": 4, "max_measurement": 1, "chunk_length": 2, "num_proofs": 1}),
        ("Prio3Nope", 2, {}),
    ],
)
def test_constructor_validation(name: str, shares: int, params: dict[str, Any]) -> None:
    with pytest.raises(InvalidTask):
        prio3_from_params(name, shares, **params)


def test_factory_builds_each_variant() -> None:
    assert prio3_from_params("Prio3Count", 2).ID == 1
    assert prio3_from_params("Prio3Sum", 2, max_measurement=255).ID == 2
    assert prio3_from_params("Prio3SumVec", 2, length=4, max_measurement=3, chunk_length=2).ID == 3
    assert prio3_from_params("Prio3Histogram", 2, length=4, chunk_length=2).ID == 4
    assert prio3_from_params("Prio3MultihotCountVec", 2, length=4, max_weight=2, chunk_length=2).ID == 5
    mp = prio3_from_params("Prio3SumVecWithMultiproof", 2, length=4, max_measurement=3, chunk_length=2)
    assert (mp.ID, mp.PROOFS) == (0xFFFFFFFF, 3)


def test_verify_next_rejects_foreign_state(hist: Prio3Histogram) -> None:
    count = Prio3Count(2)
    cp, ci = _run(count, 1)
    count_state, _ = count.verify_init(KEY, CTX, 0, b"", NONCE, cp, ci[0])
    with pytest.raises(ValueError):
        hist.verify_next(CTX, count_state, bytes(32))
    with pytest.raises(ValueError):
        hist.verify_next(CTX, "not a state", bytes(32))  # type: ignore[arg-type]
