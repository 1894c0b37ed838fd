"""Batched Prio3 verification (verify_init_batch, verifier_shares_to_message_batch) against
the single-report functions: the same bytes, the same errors, report by report."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto.field import Field64, Field64Small, Field128
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.field_native import Field64Native, Field128Native, native_built
from twinmpc.crypto.poly import (
    lagrange_weights,
    lagrange_weights_rows,
    subsample_lagrange_weights,
    subsample_lagrange_weights_rows,
)
from twinmpc.crypto.xof import Xof
from twinmpc.mpc.errors import DecodeError, InvalidMeasurement, InvalidReport, VerifyError
from twinmpc.mpc.prio3 import (
    Prio3Count,
    Prio3FixedPointBoundedL2Vec,
    Prio3Histogram,
    Prio3MultihotCountVec,
    Prio3Sum,
    Prio3SumVec,
    Prio3SumVecWithMultiproof,
)
from tests.mpc.prio3 import (
    test_prio3_vectors as vectors,  # the vector files and their variant builder
)

CTX = b"batch test"

# (variant, honest measurement from a Random) for every Prio3 variant and field backend.
VARIANTS = {
    "count2": (Prio3Count(2), lambda r: r.randrange(2)),
    "count3": (Prio3Count(3), lambda r: r.randrange(2)),
    "sum1": (Prio3Sum(2, 1), lambda r: r.randrange(2)),
    "sum255": (Prio3Sum(2, 255), lambda r: r.randrange(256)),
    "sum16bit": (Prio3Sum(3, 2**16 - 1), lambda r: r.randrange(2**16)),
    "sumvec": (Prio3SumVec(2, 5, 3, 2), lambda r: [r.randrange(4) for _ in range(5)]),
    "sumvec-limbs": (Prio3SumVec(2, 1024, 1, 32), lambda r: [r.randrange(2) for _ in range(1024)]),
    "histogram": (Prio3Histogram(2, 7, 3), lambda r: r.randrange(7)),
    "multihot": (Prio3MultihotCountVec(3, 6, 2, 2), lambda r: [1, 0, 0, 1, 0, 0] if r.randrange(2) else [0] * 6),
    "multiproof64": (Prio3SumVecWithMultiproof(2, 4, 3, 2), lambda r: [r.randrange(4) for _ in range(4)]),
    "multiproof64-u64": (Prio3SumVecWithMultiproof(2, 256, 1, 16), lambda r: [r.randrange(2) for _ in range(256)]),
    "multiproof128": (Prio3SumVecWithMultiproof(2, 4, 1, 2, 2, Field128), lambda r: [r.randrange(2) for _ in range(4)]),
    "l2": (
        Prio3FixedPointBoundedL2Vec(2, 3, 4, 2, 2, max_norm_sq=Fraction(1)),
        lambda r: [r.choice([-0.5, 0.0, 0.25]) for _ in range(3)],
    ),
}


def _fused(vdaf):  # type: ignore[no-untyped-def]
    """The variant with the compiled fused share kernel forced on where the field is native (long
    measurements get it by default; the batch path then verifies report by report)."""
    vdaf._fused = vdaf.field.NATIVE
    return vdaf


VARIANTS["sumvec-fused"] = (_fused(Prio3SumVec(2, 20, 7, 4)), lambda r: [r.randrange(8) for _ in range(20)])
VARIANTS["multihot-fused3"] = (
    _fused(Prio3MultihotCountVec(3, 6, 2, 2)), lambda r: [1, 0, 0, 1, 0, 0] if r.randrange(2) else [0] * 6
)
SLOW = {"sumvec-limbs", "multiproof64-u64"}

DEFECTS = ["none", "none", "evil", "nonce", "public", "length", "noncanonical", "proof-bit", "jr-part"]


def _outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except InvalidReport as exc:
        return exc


def _same(batch, single, vdaf) -> None:  # type: ignore[no-untyped-def]
    if isinstance(single, InvalidReport):
        assert type(batch) is type(single) and str(batch) == str(single)
        return
    assert not isinstance(batch, Exception), batch
    (bstate, bshare), (sstate, sshare) = batch, single
    assert bshare == sshare
    assert bstate.corrected_joint_rand_seed == sstate.corrected_joint_rand_seed
    assert vdaf.field.encode_vec(bstate.out_share) == vdaf.field.encode_vec(sstate.out_share)


def _make_batch(vdaf, measure, rng: random.Random, defects: list[str]):  # type: ignore[no-untyped-def]
    """Reports for every aggregator: (nonces, public shares, input shares per aggregator)."""
    nonces, pubs, inputs = [], [], [[] for _ in range(vdaf.SHARES)]
    f = vdaf.field
    for defect in defects:
        nonce = rng.randbytes(16)
        rand = rng.randbytes(vdaf.RAND_SIZE)
        if defect == "evil":  # well-formed shares of an out-of-range encoding: the proof must fail
            meas = f.from_ints([rng.randrange(3) for _ in range(vdaf.flp.MEAS_LEN)])
            pub, shares = vdaf.shard_encoded(CTX, meas, nonce, rand)
        else:
            pub, shares = vdaf.shard(CTX, measure(rng), nonce, rand)
        shares = list(shares)
        j = rng.randrange(vdaf.SHARES)  # the aggregator whose bytes are damaged
        if defect == "nonce":
            nonce = nonce[:-1]
        elif defect == "public":
            pub = pub + b"\x00"
        elif defect == "length":
            shares[j] = shares[j][:-1]
        elif defect == "noncanonical":  # leader share: an element >= p
            shares[0] = b"\xff" * f.ENCODED_SIZE + shares[0][f.ENCODED_SIZE :]
        elif defect == "proof-bit":  # leader proof share off by one: decodes, fails the proof
            at = f.ENCODED_SIZE * vdaf.flp.MEAS_LEN
            shares[0] = shares[0][:at] + bytes([shares[0][at] ^ 1]) + shares[0][at + 1 :]
        elif defect == "jr-part" and pub:
            pub = bytes([pub[0] ^ 1]) + pub[1:]
        nonces.append(nonce)
        pubs.append(pub)
        for k in range(vdaf.SHARES):
            inputs[k].append(shares[k])
    return nonces, pubs, inputs


def _check_batch(vdaf, measure, seed: int, defects: list[str]) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    verify_key = rng.randbytes(vdaf.VERIFY_KEY_SIZE)
    nonces, pubs, inputs = _make_batch(vdaf, measure, rng, defects)
    per_agg = []
    for j in range(vdaf.SHARES):
        batch = vdaf.verify_init_batch(verify_key, CTX, j, b"", nonces, pubs, inputs[j])
        assert len(batch) == len(defects)
        for b, (n, p, s) in enumerate(zip(nonces, pubs, inputs[j])):
            _same(batch[b], _outcome(vdaf.verify_init, verify_key, CTX, j, b"", n, p, s), vdaf)
        per_agg.append(batch)
    # Leader: every report all aggregators initialised, plus damaged verifier-share lists.
    lists = [[agg[b][1] for agg in per_agg] for b in range(len(defects)) if all(isinstance(agg[b], tuple) for agg in per_agg)]
    f = vdaf.field
    if lists:
        lists.append(lists[0][:-1])  # one share missing
        lists.append([lists[0][0][:-1]] + lists[0][1:])  # truncated share
        lists.append([b"\xff" * f.ENCODED_SIZE + lists[0][0][f.ENCODED_SIZE :]] + lists[0][1:])  # element >= p
    messages = vdaf.verifier_shares_to_message_batch(CTX, b"", lists)
    for got, shares in zip(messages, lists, strict=True):
        want = _outcome(vdaf.verifier_shares_to_message, CTX, b"", shares)
        if isinstance(want, InvalidReport):
            assert type(got) is type(want) and str(got) == str(want)
        else:
            assert got == want


@pytest.mark.parametrize("name", sorted(VARIANTS), ids=str)
def test_batch_matches_single_reports(name: str) -> None:
    vdaf, measure = VARIANTS[name]

    @settings(max_examples=3 if name in SLOW else 12, deadline=None)
    @given(st.integers(0, 2**32), st.lists(st.sampled_from(DEFECTS), min_size=0, max_size=3 if name in SLOW else 7))
    def check(seed: int, defects: list[str]) -> None:
        _check_batch(vdaf, measure, seed, defects)

    check()


def test_one_bad_report_never_fails_the_batch() -> None:
    """One batch with every defect: the bad reports are errors, the good ones go through."""
    vdaf, measure = VARIANTS["histogram"]
    defects = ["none", "nonce", "public", "length", "noncanonical", "proof-bit", "jr-part", "evil", "none"]
    nonces, pubs, inputs = _make_batch(vdaf, measure, random.Random(7), defects)
    leader = vdaf.verify_init_batch(bytes(32), CTX, 0, b"", nonces, pubs, inputs[0])
    helper = vdaf.verify_init_batch(bytes(32), CTX, 1, b"", nonces, pubs, inputs[1])
    for b in (1, 2, 3, 4):  # decoding defects: refused by the aggregator whose bytes are bad
        assert isinstance(leader[b], DecodeError) or isinstance(helper[b], DecodeError), defects[b]
    for b in (0, 5, 6, 7, 8):  # well-formed bytes: both aggregators initialise
        assert isinstance(leader[b], tuple) and isinstance(helper[b], tuple), defects[b]
    messages = vdaf.verifier_shares_to_message_batch(CTX, b"", [[leader[b][1], helper[b][1]] for b in (0, 5, 6, 7, 8)])
    assert [type(m).__name__ for m in (messages[1], messages[3])] == ["VerifyError", "VerifyError"]
    for b, m in ((0, messages[0]), (8, messages[4])):
        assert isinstance(m, bytes)
        for state in (leader[b][0], helper[b][0]):
            vdaf.verify_next(CTX, state, m)
    # A corrupted joint-randomness part fails either the proofs or verify_next's seed check.
    if isinstance(messages[2], bytes):
        with pytest.raises(InvalidReport):
            vdaf.verify_next(CTX, helper[6][0], messages[2])
    else:
        assert isinstance(messages[2], InvalidReport)


def test_bad_agg_param_rejects_every_report_and_caller_mistakes_raise() -> None:
    vdaf, measure = VARIANTS["count2"]
    nonces, pubs, inputs = _make_batch(vdaf, measure, random.Random(1), ["none", "none"])
    out = vdaf.verify_init_batch(bytes(32), CTX, 0, b"x", nonces, pubs, inputs[0])
    assert all(isinstance(r, DecodeError) for r in out)
    with pytest.raises(ValueError):
        vdaf.verify_init_batch(bytes(31), CTX, 0, b"", nonces, pubs, inputs[0])
    with pytest.raises(ValueError):
        vdaf.verify_init_batch(bytes(32), CTX, 2, b"", nonces, pubs, inputs[0])
    with pytest.raises(ValueError):
        vdaf.verify_init_batch(bytes(32), CTX, 0, b"", nonces, pubs[:1], inputs[0])
    assert vdaf.verify_init_batch(bytes(32), CTX, 0, b"", [], [], []) == []
    msgs = vdaf.verifier_shares_to_message_batch(CTX, b"x", [[b"", b""]])
    assert isinstance(msgs[0], DecodeError)


NATIVE_FIELDS = [Field64Native, Field128Native] if native_built() else []


class _ScriptedXof(Xof):
    """A byte stream with chosen contents (values >= p included) to drive rejection sampling."""

    SEED_SIZE = 32

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def next(self, length: int) -> bytes:
        out = self._data[self._pos : self._pos + length]
        self._pos += length
        return out


@pytest.mark.parametrize("field", [Field64, Field128, Field128Limbs, *NATIVE_FIELDS], ids=lambda f: f.__name__)
def test_expand_rows_rejection_sampling_matches_next_vec(field) -> None:  # type: ignore[no-untyped-def]
    """Rows with rejected candidates continue on their own stream exactly like Xof.next_vec
    (rows read in place on word backends); without rejections the bytes come back as the encoding."""
    vdaf = VARIANTS["count2"][0]
    size = field.ENCODED_SIZE
    rng = random.Random(3)
    streams = []
    for rejects in (0, 1, 3, 0):
        words = [rng.randbytes(size - 1) + b"\x00" for _ in range(12)]
        for at in rng.sample(range(5), rejects):
            words[at] = b"\xff" * size  # >= p in both fields
        streams.append(b"".join(words))
    got = vdaf._expand_rows(field, [_ScriptedXof(s) for s in streams], 5)
    for row, data in zip(got, streams):
        assert field.to_ints(row) == field.to_ints(_ScriptedXof(data).next_vec(field, 5))
    assert np.shape(got) == (4, 5)
    clean = [streams[0], streams[3]]
    rows, raw = vdaf._expand_rows_raw(field, [_ScriptedXof(s) for s in clean], 5)
    assert bytes(raw) == b"".join(s[: 5 * size] for s in clean) == field.encode_vec(rows.reshape(-1))


def test_query_rows_flags_a_test_point_on_the_roots_like_query_rejects_it() -> None:
    vdaf = VARIANTS["sum255"][0]
    flp, f = vdaf.flp, vdaf.field
    p = 16  # next_power_of_2(1 + 8 calls)
    meas = f.from_ints([1] * flp.MEAS_LEN)
    proof = f.from_ints(range(flp.PROOF_LEN))
    good = f.from_ints(list(range(2, 2 + flp.QUERY_RAND_LEN)))
    bad = f.from_ints(list(range(2, 1 + flp.QUERY_RAND_LEN)) + [f.root_of_unity(p)])
    with pytest.raises(InvalidReport):
        flp.query(meas, proof, bad, f.zeros(0), 2)
    rows = np.stack([good, bad])
    ver, hit = flp.query_rows(f, np.stack([meas, meas]), np.stack([proof, proof]), rows, f.zeros_shape((2, 0)), 2)
    assert hit.tolist() == [False, True]
    assert f.to_ints(ver[0]) == f.to_ints(flp.query(meas, proof, good, f.zeros(0), 2))


@pytest.mark.parametrize("field", [Field64, Field64Small, Field128, Field128Limbs], ids=lambda f: f.__name__)
@pytest.mark.parametrize("n, p", [(1, 1), (2, 1), (8, 8), (16, 4), (32, 2)])
def test_lagrange_weight_rows_match_the_scalar_twins(field, n: int, p: int) -> None:  # type: ignore[no-untyped-def]
    """Including points that are n-th but not p-th roots (S = 0: the direct fallback)."""
    rng = random.Random(n * 100 + p)
    ts = [rng.randrange(field.MODULUS) for _ in range(5)] + [field.root_of_unity(16), field.root_of_unity(4), 1, 0]
    t = field.from_ints(ts)
    lam = lagrange_weights_rows(field, t, n)
    sub = subsample_lagrange_weights_rows(field, lam, t, p)
    for i, ti in enumerate(ts):
        one = lagrange_weights(field, ti, n)
        assert field.to_ints(lam[i]) == field.to_ints(one)
        assert field.to_ints(sub[i]) == field.to_ints(subsample_lagrange_weights(field, one, ti, p))


BATCH_VECTOR_FILES = [p for p in vectors.VECTOR_FILES if not p.stem.startswith("Prio3HigherDegree")]  # test-only circuit


@pytest.mark.parametrize("path", BATCH_VECTOR_FILES, ids=lambda p: p.stem)
def test_official_vectors_through_the_batch_path(path, kernel) -> None:  # type: ignore[no-untyped-def]
    """Known answers: all of a vector file's reports verified as one batch per aggregator (both kernels)."""
    vectors._require_vectors()
    doc = json.loads(path.read_text())
    vdaf = vectors.build(path.stem, doc)
    ctx, verify_key, agg_param = (bytes.fromhex(doc[k]) for k in ("ctx", "verify_key", "agg_param"))
    reports = doc["reports"]
    expect = {(op["operation"], op.get("report_index"), op.get("aggregator_id")): op["success"] for op in doc["operations"]}
    nonces = [bytes.fromhex(r["nonce"]) for r in reports]
    pubs = [bytes.fromhex(r["public_share"]) for r in reports]
    for j in range(vdaf.SHARES):
        got = vdaf.verify_init_batch(verify_key, ctx, j, agg_param, nonces, pubs, [bytes.fromhex(r["input_shares"][j]) for r in reports])
        for i, r in enumerate(reports):
            if ("verify_init", i, j) not in expect:
                continue
            if not expect[("verify_init", i, j)]:
                assert isinstance(got[i], InvalidReport)
            else:
                assert got[i][1].hex() == r["verifier_shares"][0][j]
    asked = [i for i in range(len(reports)) if ("verifier_shares_to_message", i, None) in expect]
    messages = vdaf.verifier_shares_to_message_batch(
        ctx, agg_param, [[bytes.fromhex(h) for h in reports[i]["verifier_shares"][0]] for i in asked]
    )
    for i, m in zip(asked, messages, strict=True):
        if expect[("verifier_shares_to_message", i, None)]:
            assert m.hex() == reports[i]["verifier_messages"][0]
        else:
            assert isinstance(m, VerifyError)


def test_long_batches_are_sliced_with_the_same_results(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A batch larger than BATCH_MAX_ELEMENTS allows runs in slices; results stay in report order."""
    from twinmpc.mpc.prio3 import batch as batch_module

    vdaf, measure = VARIANTS["histogram"]
    defects = ["none", "length", "none", "evil", "nonce", "none", "none"]
    nonces, pubs, inputs = _make_batch(vdaf, measure, random.Random(11), defects)
    whole = vdaf.verify_init_batch(bytes(32), CTX, 1, b"", nonces, pubs, inputs[1])
    assert vdaf.flp.PROOF_LEN >= vdaf.flp.MEAS_LEN
    monkeypatch.setattr(batch_module, "BATCH_MAX_ELEMENTS", 2 * vdaf.flp.PROOF_LEN)  # 2 reports per slice
    sliced = vdaf.verify_init_batch(bytes(32), CTX, 1, b"", nonces, pubs, inputs[1])
    for a, b in zip(sliced, whole, strict=True):
        _same(a, b, vdaf)


# ---------------------------------------------------------------------- batched shard
@pytest.mark.parametrize("name", sorted(VARIANTS), ids=str)
def test_shard_batch_matches_shard_report_by_report(name: str) -> None:
    """shard_batch gives, entry by entry, the bytes of shard with the same nonce and rand."""
    vdaf, measure = VARIANTS[name]
    rng = random.Random(hash(name) & 0xFFFF)
    n = 2 if name in SLOW else 9
    measurements = [measure(rng) for _ in range(n)]
    nonces = [rng.randbytes(16) for _ in range(n)]
    rands = [rng.randbytes(vdaf.RAND_SIZE) for _ in range(n)]
    batch = vdaf.shard_batch(CTX, measurements, nonces, rands)
    assert batch == [vdaf.shard(CTX, m, nonce, rand) for m, nonce, rand in zip(measurements, nonces, rands)]
    # and the batch's reports verify and aggregate like any others
    inits = [vdaf.verify_init_batch(bytes(32), CTX, j, b"", nonces, [p for p, _ in batch], [s[j] for _, s in batch])
             for j in range(vdaf.SHARES)]
    msgs = vdaf.verifier_shares_to_message_batch(CTX, b"", [[inits[j][b][1] for j in range(vdaf.SHARES)] for b in range(n)])
    assert all(isinstance(m, bytes) for m in msgs)


@pytest.mark.parametrize("path", [p for p in BATCH_VECTOR_FILES if "_bad_" not in p.stem], ids=lambda p: p.stem)
def test_official_vectors_sharded_as_one_batch(path, kernel) -> None:  # type: ignore[no-untyped-def]
    """Known answers: every report of a vector file sharded in one shard_batch call (both kernels)."""
    vectors._require_vectors()
    doc = json.loads(path.read_text())
    vdaf = vectors.build(path.stem, doc)
    shard_ops = {op["report_index"] for op in doc["operations"] if op["operation"] == "shard"}
    reports = [r for i, r in enumerate(doc["reports"]) if i in shard_ops]
    assert reports, "every good vector shards its reports"
    got = vdaf.shard_batch(
        bytes.fromhex(doc["ctx"]),
        [r["measurement"] for r in reports],
        [bytes.fromhex(r["nonce"]) for r in reports],
        [bytes.fromhex(r["rand"]) for r in reports],
    )
    for (pub, inputs), r in zip(got, reports, strict=True):
        assert pub.hex() == r["public_share"]
        assert [s.hex() for s in inputs] == r["input_shares"]


def test_shard_batch_rejects_bad_input_before_sharding_anything() -> None:
    vdaf = Prio3Histogram(2, 4, 2)
    nonces, rands = [bytes(16)] * 3, [bytes(vdaf.RAND_SIZE)] * 3
    with pytest.raises(InvalidMeasurement, match="measurement 1"):
        vdaf.shard_batch(CTX, [0, 4, 1], nonces, rands)
    with pytest.raises(ValueError, match="same length"):
        vdaf.shard_batch(CTX, [0, 1], nonces, rands)
    with pytest.raises(ValueError, match="nonce"):
        vdaf.shard_batch(CTX, [0, 1, 2], [bytes(15)] * 3, rands)
    with pytest.raises(ValueError, match="rand"):
        vdaf.shard_batch(CTX, [0, 1, 2], nonces, [bytes(vdaf.RAND_SIZE - 1)] * 3)
    with pytest.raises(InvalidMeasurement, match="wrong length"):
        vdaf.shard_encoded_batch(CTX, [vdaf.field.zeros(3)] * 3, nonces, rands)
    assert vdaf.shard_batch(CTX, [], [], []) == []


def test_long_shard_batches_are_sliced_with_the_same_results(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from twinmpc.mpc.prio3 import batch as batch_module

    vdaf, measure = VARIANTS["histogram"]
    rng = random.Random(5)
    measurements = [measure(rng) for _ in range(7)]
    nonces = [rng.randbytes(16) for _ in range(7)]
    rands = [rng.randbytes(vdaf.RAND_SIZE) for _ in range(7)]
    whole = vdaf.shard_batch(CTX, measurements, nonces, rands)
    monkeypatch.setattr(batch_module, "BATCH_MAX_ELEMENTS", 2 * vdaf.flp.PROOF_LEN)  # 2 reports per slice
    assert vdaf.shard_batch(CTX, measurements, nonces, rands) == whole


def test_long_measurements_shard_report_by_report_in_a_batch(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from twinmpc.mpc.prio3 import batch as batch_module

    vdaf, measure = VARIANTS["sumvec"]
    rng = random.Random(6)
    args = ([measure(rng) for _ in range(3)], [rng.randbytes(16) for _ in range(3)],
            [rng.randbytes(vdaf.RAND_SIZE) for _ in range(3)])
    vectorised = vdaf.shard_batch(CTX, *args)
    monkeypatch.setattr(batch_module, "SHARD_BATCH_MAX_MEAS_LEN", 1)
    assert vdaf.shard_batch(CTX, *args) == vectorised


@pytest.mark.parametrize("shares", [2, 3])
def test_fused_share_kernel_gives_the_bytes_of_the_plain_path(shares: int) -> None:
    """Shard and both kinds of verification, fused kernel against the plain native path."""
    if not native_built():
        pytest.skip("LOUD SKIP: twinmpc.crypto._field_kernel is not built (pip install -e .)")
    fused, plain = _fused(Prio3SumVec(shares, 30, 5, 7)), Prio3SumVec(shares, 30, 5, 7)
    assert fused._fused and not plain._fused
    rng = random.Random(shares)
    for _ in range(3):
        meas, nonce, rand = [rng.randrange(6) for _ in range(30)], rng.randbytes(16), rng.randbytes(fused.RAND_SIZE)
        pub, inputs = fused.shard(CTX, meas, nonce, rand)
        assert (pub, inputs) == plain.shard(CTX, meas, nonce, rand)
        for j in range(shares):
            got = fused.verify_init(bytes(32), CTX, j, b"", nonce, pub, inputs[j])
            assert got[1] == plain.verify_init(bytes(32), CTX, j, b"", nonce, pub, inputs[j])[1]
            assert np.array_equal(got[0].out_share, fused.verify_init_batch(bytes(32), CTX, j, b"", [nonce], [pub], [inputs[j]])[0][0].out_share)


@pytest.mark.parametrize("shares, proofs", [(2, 1), (3, 1), (2, 3)])
def test_streamed_helper_verification_is_verify_init(shares: int, proofs: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The helpers' two-pass verification (verify_init_batch of long SumVec reports) gives
    verify_init's state and verifier share, or its error, for honest and defective reports;
    tiny blocks so that calls, output units and the ragged last call cross block borders."""
    if not native_built():
        pytest.skip("LOUD SKIP: twinmpc.crypto._field_kernel is not built (pip install -e .)")
    from twinmpc.mpc.prio3 import stream

    monkeypatch.setattr(stream, "STREAM_BLOCK_ELEMENTS", 16)
    vdaf = _fused(Prio3SumVecWithMultiproof(shares, 11, 5, 4, proofs) if proofs > 1 else Prio3SumVec(shares, 11, 5, 4))
    assert vdaf._streams_helper(1) and not vdaf._streams_helper(0)
    measure = lambda r: [r.randrange(6) for _ in range(11)]  # noqa: E731
    nonces, pubs, inputs = _make_batch(vdaf, measure, random.Random(shares + proofs), DEFECTS)
    for j in range(1, shares):
        batch = vdaf.verify_init_batch(bytes(32), CTX, j, b"", nonces, pubs, inputs[j])
        for b in range(len(nonces)):
            single = _outcome(vdaf.verify_init, bytes(32), CTX, j, b"", nonces[b], pubs[b], inputs[j][b])
            _same(_outcome(vdaf._verify_init_streamed, bytes(32), CTX, j, b"", nonces[b], pubs[b], inputs[j][b]), single, vdaf)
            _same(batch[b], single, vdaf)
