"""Ed25519 keys (crypto.signing) and the signed hash-chained audit log (crypto.audit_log)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tests.paths import REPO, OUR_VECTORS, VDAF_VECTORS  # noqa: F401
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from twinmpc.crypto import audit_log
from twinmpc.crypto.audit_log import AuditLog, AuditLogCorrupt, canonical_json
from twinmpc.crypto.audit_verify import audit_verify_main, verify_log
from twinmpc.crypto.signing import BadSignature, SigningKey, VerifyKey, key_id_of

VECTORS = sorted(OUR_VECTORS.glob("audit_log_*.json"))
DST = b"twinmpc/v1/test"


def fixed_clock(start: datetime | None = None) -> Iterator[datetime]:
    t = start or datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)
    while True:
        yield t
        t += timedelta(milliseconds=250)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.from_seed(bytes(range(100, 132)))


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.from_seed(bytes(32))


# ================================================================ signing
def test_rfc8032_seed_gives_the_rfc_public_key() -> None:
    """RFC 8032 Section 7.1, TEST 1: seed 9d61... has public key d75a...; key id is SHA-256 of it, 8 bytes."""
    k = SigningKey.from_seed(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    pub = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert k.public_key.raw == pub
    assert k.key_id == hashlib.sha256(pub).digest()[:8].hex() == key_id_of(pub)


def test_sign_verify_with_domain_separation(key: SigningKey, other_key: SigningKey) -> None:
    sig = key.sign(b"hello", dst=DST)
    key.public_key.verify(sig, b"hello", dst=DST)
    # independent check: the signature is plain Ed25519 over dst || 0x00 || message
    Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132))).public_key().verify(sig, DST + b"\x00hello")
    with pytest.raises(BadSignature):
        key.public_key.verify(sig, b"hello", dst=b"twinmpc/v1/other")
    with pytest.raises(BadSignature):
        key.public_key.verify(sig, b"hellp", dst=DST)
    with pytest.raises(BadSignature):
        other_key.public_key.verify(sig, b"hello", dst=DST)
    with pytest.raises(BadSignature, match="64 bytes"):
        key.public_key.verify(sig[:-1], b"hello", dst=DST)
    for bad in (b"", b"a\x00b", b"x" * 256, "text"):
        with pytest.raises(ValueError, match="dst"):
            key.sign(b"m", dst=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        key.sign("m", dst=DST)  # type: ignore[arg-type]


def test_repr_is_redacted(key: SigningKey) -> None:
    text = repr(key)
    assert "redacted" in text and key.key_id in text
    pem_body = b"".join(key.to_pem().splitlines()[1:-1]).decode()
    assert pem_body not in text and bytes(range(100, 132)).hex() not in text
    assert repr(key.public_key) == f"VerifyKey(key_id={key.key_id})"


def test_private_key_file_plain_and_encrypted(tmp_path: Path, key: SigningKey) -> None:
    plain = tmp_path / "plain.pem"
    key.save(plain)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    assert SigningKey.load(plain).public_key == key.public_key
    enc = tmp_path / "enc.pem"
    key.save(enc, passphrase=b"correct horse")
    assert b"ENCRYPTED" in enc.read_bytes()
    assert SigningKey.load(enc, b"correct horse").key_id == key.key_id
    with pytest.raises(ValueError, match="wrong passphrase"):
        SigningKey.load(enc, b"wrong")
    with pytest.raises(ValueError, match="passphrase"):
        SigningKey.load(enc)
    with pytest.raises(FileExistsError):
        key.save(plain)
    key.save(plain, overwrite=True)
    with pytest.raises(ValueError, match="passphrase"):
        key.to_pem(b"")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_loading_refuses_group_readable_key(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "k.pem"
    key.save(p)
    os.chmod(p, 0o644)
    with pytest.raises(PermissionError, match="0644"):
        SigningKey.load(p)


def test_public_key_files(tmp_path: Path, key: SigningKey) -> None:
    pem = tmp_path / "pub.pem"
    key.public_key.save(pem)
    raw = tmp_path / "pub.raw"
    raw.write_bytes(key.public_key.raw)
    hexf = tmp_path / "pub.hex"
    hexf.write_text(key.public_key.raw.hex() + "\n")
    for p in (pem, raw, hexf):
        assert VerifyKey.load(p) == key.public_key
    bad = tmp_path / "bad"
    bad.write_bytes(b"z" * 64)
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        VerifyKey.load(bad)
    with pytest.raises(ValueError):
        VerifyKey.from_raw(b"\x01" * 31)
    with pytest.raises(ValueError):
        SigningKey.from_seed(b"\x01" * 31)
    with pytest.raises(ValueError, match="PEM"):
        VerifyKey.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ValueError, match="PEM private key"):
        SigningKey.from_pem(b"not a pem")
    with pytest.raises(TypeError):
        SigningKey("k")  # type: ignore[arg-type]


# ================================================================ known-answer vectors
def _vector_ids() -> list[str]:
    return [p.name for p in VECTORS]


@pytest.fixture(params=VECTORS, ids=_vector_ids())
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    return json.loads(request.param.read_text(encoding="utf-8"))


def _write_vector_log(vector: dict[str, Any], tmp_path: Path) -> Path:
    log = tmp_path / "audit.log"
    log.write_bytes("".join(line + "\n" for line in vector["log"]).encode("utf-8"))
    (tmp_path / "audit.log.checkpoint").write_bytes((vector["checkpoint_file"] + "\n").encode("utf-8"))
    (tmp_path / "audit.log.head").write_bytes((vector["head_file"] + "\n").encode("utf-8"))
    return log


def test_vectors_exist() -> None:
    assert VECTORS, "tests/vectors/twinmpc-v1/audit_log_*.json missing"


def test_known_answer_lines(vector: dict[str, Any], tmp_path: Path) -> None:
    """Fixed key, fixed clock: appending the vector's entries gives exactly its bytes."""
    key = SigningKey.from_seed(bytes.fromhex(vector["signing_seed"]))
    assert key.public_key.raw.hex() == vector["public_key"] and key.key_id == vector["key_id"]
    times = iter(datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc) for t in vector["times"])
    path = tmp_path / "kat.log"
    with AuditLog.open(path, key, checkpoint_interval=vector["checkpoint_interval"], clock=lambda: next(times)) as log:
        ids = [log.append(a["kind"], a["actor"], **a["fields"]) for a in vector["appends"]]
    assert path.read_bytes() == "".join(line + "\n" for line in vector["log"]).encode("utf-8")
    assert ids == [a["entry_id"] for a in vector["appends"]]
    assert (tmp_path / "kat.log.checkpoint").read_bytes() == (vector["checkpoint_file"] + "\n").encode("utf-8")
    assert (tmp_path / "kat.log.head").read_bytes() == (vector["head_file"] + "\n").encode("utf-8")


def test_signed_head_known_answer_independently(vector: dict[str, Any]) -> None:
    """The head line re-derived with json + raw Ed25519 only: count, hash of the last line, signature."""
    raw_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["signing_seed"]))
    body = {"count": len(vector["log"]), "head": hashlib.sha256(vector["log"][-1].encode()).hexdigest(),
            "key_id": vector["key_id"], "v": 1}
    body_bytes = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    signature = raw_key.sign(vector["head_dst"].encode() + b"\x00" + body_bytes)
    assert json.dumps({**body, "signature": signature.hex()}, sort_keys=True, separators=(",", ":")) == vector["head_file"]


def test_known_answer_lines_independently(vector: dict[str, Any]) -> None:
    """Re-derive each line with json + raw Ed25519 only, not through crypto.audit_log."""
    raw_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["signing_seed"]))
    prev = "0" * 64
    for seq, line in enumerate(vector["log"]):
        entry = json.loads(line)
        body = {k: v for k, v in entry.items() if k != "signature"}
        assert body["seq"] == seq and body["prev_hash"] == prev and body["key_id"] == vector["key_id"]
        body_bytes = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        signature = raw_key.sign(vector["dst"].encode() + b"\x00" + body_bytes)
        rebuilt = json.dumps({**body, "signature": signature.hex()}, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False)
        assert rebuilt == line
        prev = hashlib.sha256(line.encode()).hexdigest()
    ids = [hashlib.sha256(line.encode()).hexdigest() for line in vector["log"]]
    assert all(a["entry_id"] in ids for a in vector["appends"])


def test_vector_log_verifies(vector: dict[str, Any], tmp_path: Path) -> None:
    log = _write_vector_log(vector, tmp_path)
    res = verify_log(log, VerifyKey.from_raw(bytes.fromhex(vector["public_key"])))
    assert res.ok, res
    assert res.entries == len(vector["log"]) and res.head == hashlib.sha256(vector["log"][-1].encode()).hexdigest()
    assert res.last_checkpoint_seq == json.loads(vector["checkpoint_file"])["seq"]


def _apply(op: dict[str, Any], vector: dict[str, Any], log: Path) -> None:
    lines = [line.encode("utf-8") for line in vector["log"]]
    key = SigningKey.from_seed(bytes.fromhex(vector["signing_seed"]))

    def resign(entry: dict[str, Any], signer: SigningKey) -> bytes:
        body = {k: v for k, v in entry.items() if k != "signature"}
        body["key_id"] = signer.key_id
        body["signature"] = signer.sign(canonical_json(body), dst=vector["dst"].encode()).hex()
        return canonical_json(body)

    (name, arg), = op.items()
    tail = b"\n"
    if name == "flip":
        i = arg["line"] - 1
        at = lines[i].index(arg["find"].encode())
        b = bytearray(lines[i])
        b[at] ^= arg["xor"]
        lines[i] = bytes(b)
    elif name == "delete":
        del lines[arg - 1]
    elif name == "swap":
        lines[arg - 1], lines[arg] = lines[arg], lines[arg - 1]
    elif name == "truncate_bytes":
        data = b"\n".join(lines) + b"\n"
        log.write_bytes(data[:-arg])
        return
    elif name == "keep_lines":
        lines = lines[:arg]
    elif name == "reserialise":
        lines[arg - 1] = json.dumps(json.loads(lines[arg - 1]), sort_keys=True).encode()
    elif name == "resign":
        signer = SigningKey.from_seed(bytes.fromhex(arg["seed"]))
        lines[arg["line"] - 1] = resign(json.loads(lines[arg["line"] - 1]), signer)
    elif name == "relink":
        entry = json.loads(lines[arg - 1])
        entry["prev_hash"] = "ab" * 32
        lines[arg - 1] = resign(entry, key)
    else:
        raise AssertionError(f"unknown op {name}")
    log.write_bytes(b"\n".join(lines) + tail)


def _bad_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for p in VECTORS:
        vec = json.loads(p.read_text(encoding="utf-8"))
        out += [(f"{p.stem}:{case['name']}", vec, case) for case in vec["bad"]]
    return out


@pytest.mark.parametrize(("name", "vec", "case"), _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_vector_tampering_is_pinpointed(name: str, vec: dict[str, Any], case: dict[str, Any], tmp_path: Path) -> None:
    log = _write_vector_log(vec, tmp_path)
    _apply(case["op"], vec, log)
    res = verify_log(log, VerifyKey.from_raw(bytes.fromhex(vec["public_key"])))
    assert not res.ok
    assert res.bad_line == case["line"], res
    assert case["reason"] in res.reason, res
    code, msg = audit_verify_main(str(log), str(_pub_file(tmp_path, vec)))
    assert code == 1 and f"line {case['line']}" in msg and msg.startswith("FAILED")


def _pub_file(tmp_path: Path, vec: dict[str, Any]) -> Path:
    p = tmp_path / "pub.hex"
    p.write_text(vec["public_key"])
    return p


# ================================================================ writing and reopening
def test_append_returns_entry_hash_and_reopen_continues(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "a.log"
    clock = fixed_clock()
    with AuditLog.open(path, key, checkpoint_interval=3, clock=lambda: next(clock)) as log:
        first = log.append("task_created", "leader", task="t1")
        assert first == hashlib.sha256(path.read_bytes().rstrip(b"\n")).hexdigest() == log.head
        for i in range(4):
            log.append("collection", "leader", task="t1", window=i)
        assert log.count == 6  # 5 entries + a checkpoint after the third
    with AuditLog.open(path, key, checkpoint_interval=3, clock=lambda: next(clock)) as log:
        assert log.count == 6
        log.append("refusal", "leader", task="t1", reason="budget")
    res = verify_log(path, key.public_key)
    assert res.ok and res.entries == 8 and res.last_checkpoint_seq == 7
    kinds = [json.loads(line)["kind"] for line in path.read_bytes().splitlines()]
    assert kinds == [
        "task_created", "collection", "collection", "checkpoint",
        "collection", "collection", "refusal", "checkpoint",
    ]


def test_checkpoint_slot_filled_on_reopen(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "a.log"
    with AuditLog.open(path, key, checkpoint_interval=10) as log:
        log.append("key_event", "op", event="created")
        log.append("key_event", "op", event="published")
    with AuditLog.open(path, key, checkpoint_interval=2) as log:  # seq 2 is a checkpoint slot for N=2
        assert log.count == 3
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[-1])["kind"] == "checkpoint"
    assert (tmp_path / "a.log.checkpoint").read_bytes() == lines[-1] + b"\n"
    assert verify_log(path, key.public_key).ok


def test_reopen_refuses_torn_or_foreign_tail(tmp_path: Path, key: SigningKey, other_key: SigningKey) -> None:
    path = tmp_path / "a.log"
    with AuditLog.open(path, key) as log:
        log.append("task_created", "leader", task="t1")
    with pytest.raises(AuditLogCorrupt, match="does not verify"):
        AuditLog.open(path, other_key)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(AuditLogCorrupt, match="torn"):
        AuditLog.open(path, key)


def test_reopen_handles_long_last_line(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "a.log"
    with AuditLog.open(path, key) as log:
        log.append("task_created", "leader", task="t1")
        log.append("task_changed", "leader", **{f"k{i}": "x" * 250 for i in range(30)})  # > 4096-byte line
    with AuditLog.open(path, key) as log:
        assert log.count == 2


def test_single_writer_lock(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "a.log"
    with AuditLog.open(path, key):
        with pytest.raises(AuditLogCorrupt, match="already open"):
            AuditLog.open(path, key)
    AuditLog.open(path, key).close()  # released on close


def test_closed_log_refuses_appends(tmp_path: Path, key: SigningKey) -> None:
    log = AuditLog.open(tmp_path / "a.log", key)
    log.close()
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.append("task_created", "leader")
    assert "count=0" in repr(log)


@pytest.mark.parametrize(
    ("fields", "exc", "match"),
    [
        ({"share": b"\x01\x02"}, TypeError, "bytes"),
        ({"reading": bytearray(4)}, TypeError, "bytearray"),
        ({"vector": np.arange(3)}, TypeError, "ndarray"),
        ({"values": list(range(17))}, ValueError, "list longer"),
        ({"text": "x" * 1025}, ValueError, "string longer"),
        ({"deep": {"a": {"b": {"c": 1}}}}, ValueError, "nested"),
        ({"big": 1 << 63}, ValueError, "int64"),
        ({"nan": float("nan")}, ValueError, "non-finite"),
        ({"Bad-Name": 1}, ValueError, "field name"),
        ({f"k{i}": 1 for i in range(33)}, ValueError, "more than 32"),
        ({"obj": object()}, TypeError, "object"),
    ],
)
def test_fields_are_metadata_only(tmp_path: Path, key: SigningKey, fields: dict, exc: type, match: str) -> None:
    with AuditLog.open(tmp_path / "a.log", key) as log:
        with pytest.raises(exc, match=match):
            log.append("collection", "leader", **fields)
        assert log.count == 0
    assert (tmp_path / "a.log").read_bytes() == b""


def test_kind_actor_clock_and_interval_validation(tmp_path: Path, key: SigningKey) -> None:
    with AuditLog.open(tmp_path / "a.log", key, clock=lambda: datetime(2026, 1, 1)) as log:
        with pytest.raises(ValueError, match="unknown audit entry kind"):
            log.append("reading", "leader")
        with pytest.raises(ValueError, match="unknown audit entry kind"):
            log.append("checkpoint", "leader")
        with pytest.raises(ValueError, match="actor"):
            log.append("collection", "")
        with pytest.raises(ValueError, match="timezone-aware"):
            log.append("collection", "leader")
    with pytest.raises(ValueError, match="checkpoint_interval"):
        AuditLog.open(tmp_path / "b.log", key, checkpoint_interval=0)
    with pytest.raises(TypeError):
        AuditLog.open(tmp_path / "b.log", key.public_key)  # type: ignore[arg-type]


# ================================================================ verification edge cases
def _signed_line(key: SigningKey, **overrides: Any) -> bytes:
    entry = {
        "v": 1, "seq": 0, "time": "2026-11-25T09:00:00.000000Z", "kind": "collection", "actor": "leader",
        "fields": {}, "key_id": key.key_id, "prev_hash": "0" * 64,
    }
    entry.update(overrides)
    entry["signature"] = key.sign(canonical_json(entry), dst=audit_log.DST_AUDIT_ENTRY).hex()
    return canonical_json(entry)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"kind": "reading"}, "unknown kind"),
        ({"fields": {"values": list(range(40))}}, "list longer"),
        ({"seq": -1}, "non-negative"),
        ({"prev_hash": "XY"}, "prev_hash must be"),
        ({"time": "yesterday"}, "time must look like"),
        ({"v": 2}, "version"),
        ({"actor": ""}, "actor"),
        ({"fields": [1]}, "fields must be an object"),
        ({"kind": "checkpoint", "fields": {"count": 5, "head": "0" * 64}}, "checkpoint count/head"),
    ],
)
def test_signed_but_malformed_entries_are_rejected(tmp_path: Path, key: SigningKey, overrides: dict, match: str) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(_signed_line(key, **overrides) + b"\n")
    res = verify_log(path, key.public_key)
    assert not res.ok and res.bad_line == 1 and match in res.reason, res


def test_extra_key_and_non_object_lines(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"[1,2]\n")
    assert "exactly the keys" in verify_log(path, key.public_key).reason
    path.write_bytes(b"\xff\xfe\n")
    assert verify_log(path, key.public_key).reason == "not valid UTF-8"


def test_every_flipped_byte_is_pinpointed(tmp_path: Path, key: SigningKey) -> None:
    """Exhaustive sweep (stride 5) over a small log: each single-bit flip fails at the line holding it."""
    path = tmp_path / "a.log"
    with AuditLog.open(path, key, checkpoint_interval=2, clock=lambda: datetime(2026, 11, 25, tzinfo=timezone.utc)) as log:
        log.append("task_created", "leader", task="t1", note="Straße")
        log.append("collection", "leader", task="t1", reports=10, epsilon=0.5)
        log.append("refusal", "leader", task="t1", reason="batch too small")
    good = path.read_bytes()
    starts = [0] + [i + 1 for i, b in enumerate(good) if b == 0x0A]
    for offset in range(0, len(good), 5):
        bad = bytearray(good)
        bad[offset] ^= 0x01
        path.write_bytes(bytes(bad))
        res = verify_log(path, key.public_key)
        line = max(i for i, s in enumerate(starts) if s <= offset) + 1
        assert not res.ok and res.bad_line == line, (offset, res)


def test_wrong_public_key_fails_on_line_one(tmp_path: Path, key: SigningKey, other_key: SigningKey) -> None:
    path = tmp_path / "a.log"
    with AuditLog.open(path, key) as log:
        log.append("task_created", "leader", task="t1")
    res = verify_log(path, other_key.public_key)
    assert res.bad_line == 1 and f"expected {other_key.key_id}" in res.reason


def test_empty_log_and_sidecar_problems(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "a.log"
    AuditLog.open(path, key).close()  # a new log signs its empty head
    res = verify_log(path, key.public_key)
    assert res.ok and res.entries == 0 and res.head == "0" * 64
    res = verify_log(path, key.public_key, checkpoint_path=tmp_path / "missing.checkpoint")
    assert not res.ok and "cannot read checkpoint" in res.reason and res.describe() == res.reason
    side = tmp_path / "a.log.checkpoint"
    side.write_bytes(b"{}\n{}\n")
    assert "exactly one line" in verify_log(path, key.public_key).reason
    side.write_bytes(_signed_line(key) + b"\n")
    assert "holds a 'collection' entry" in verify_log(path, key.public_key).reason
    side.write_bytes(b"garbage\n")
    assert "not valid JSON" in verify_log(path, key.public_key).reason


def test_sidecar_from_another_history_is_detected(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "a.log"
    with AuditLog.open(path, key, checkpoint_interval=1) as log:
        log.append("task_created", "leader", task="t1")
    other = tmp_path / "b.log"
    with AuditLog.open(other, key, checkpoint_interval=1) as log:
        log.append("task_created", "leader", task="t2")
    res = verify_log(path, key.public_key, checkpoint_path=tmp_path / "b.log.checkpoint")
    assert not res.ok and res.bad_line == 2 and "differs from the checkpoint" in res.reason


# ================================================================ CLI body
def test_audit_verify_main(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "a.log"
    with AuditLog.open(path, key, checkpoint_interval=2) as log:
        for i in range(3):
            log.append("collection", "leader", window=i)
    pub = tmp_path / "pub.pem"
    key.public_key.save(pub)
    code, msg = audit_verify_main(str(path), str(pub))
    assert code == 0 and msg.startswith("OK") and "4 entries verified" in msg and key.key_id in msg
    code, msg = audit_verify_main(str(tmp_path / "none.log"), str(pub))
    assert code == 2 and "cannot read audit log" in msg
    code, msg = audit_verify_main(str(path), str(tmp_path / "none.pem"))
    assert code == 2 and "cannot read public key" in msg
    junk = tmp_path / "junk"
    junk.write_bytes(b"junk")
    assert audit_verify_main(str(path), str(junk))[0] == 2


def test_concurrent_appends_from_threads_keep_the_chain(tmp_path: Path, key: SigningKey) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "a.log"
    with AuditLog.open(path, key, checkpoint_interval=7) as log:
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda i: log.append("collection", "leader", window=i), range(60)))
    res = verify_log(path, key.public_key)
    assert res.ok and res.entries == 60 + 60 // 7 and len(set(ids)) == 60


# ================================================================ signed head
def _log_with(tmp_path: Path, key: SigningKey, n: int) -> Path:
    path = tmp_path / "h.log"
    with AuditLog.open(path, key) as log:
        for i in range(n):
            log.append("collection", "leader", window=i)
    return path


def test_deleting_trailing_entries_is_detected_before_any_checkpoint(tmp_path: Path, key: SigningKey) -> None:
    path = _log_with(tmp_path, key, 5)
    assert verify_log(path, key.public_key).ok
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    res = verify_log(path, key.public_key)
    assert not res.ok and "log truncated" in res.reason and "records 5 entries" in res.reason


def test_emptying_the_log_is_detected(tmp_path: Path, key: SigningKey) -> None:
    path = _log_with(tmp_path, key, 3)
    path.write_bytes(b"")
    res = verify_log(path, key.public_key)
    assert not res.ok and "log truncated" in res.reason


def test_missing_or_forged_head_fails(tmp_path: Path, key: SigningKey, other_key: SigningKey) -> None:
    path = _log_with(tmp_path, key, 2)
    head = tmp_path / "h.log.head"
    good = head.read_bytes()
    head.unlink()
    assert "cannot be read" in verify_log(path, key.public_key).reason
    head.write_bytes(good.replace(b'"count":2', b'"count":1'))
    assert "does not verify" in verify_log(path, key.public_key).reason
    with AuditLog.open(tmp_path / "o.log", other_key) as log:
        log.append("collection", "leader", window=0)
    head.write_bytes((tmp_path / "o.log.head").read_bytes())
    assert "expected " + key.key_id in verify_log(path, key.public_key).reason


def test_a_head_kept_elsewhere_proves_the_log_still_extends_it(tmp_path: Path, key: SigningKey) -> None:
    path = _log_with(tmp_path, key, 3)
    kept = tmp_path / "kept.head"
    kept.write_bytes((tmp_path / "h.log.head").read_bytes())
    with AuditLog.open(path, key) as log:
        log.append("collection", "leader", window=9)
    assert verify_log(path, key.public_key, head_path=kept).ok
    # cut back to 2 entries and re-sign nothing: the kept head (3 entries) exposes it even if the
    # attacker also restores an older own head
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]))
    res = verify_log(path, key.public_key, head_path=kept)
    assert not res.ok and "log truncated" in res.reason


def test_reopening_after_a_crash_between_append_and_head_repairs_the_head(tmp_path: Path, key: SigningKey) -> None:
    path = _log_with(tmp_path, key, 2)
    stale = (tmp_path / "h.log.head").read_bytes()
    with AuditLog.open(path, key) as log:
        log.append("collection", "leader", window=2)
    (tmp_path / "h.log.head").write_bytes(stale)  # as if the process died before rewriting the head
    assert verify_log(path, key.public_key).ok  # the log extends its (older) head: nothing lost
    AuditLog.open(path, key).close()
    assert b'"count":3' in (tmp_path / "h.log.head").read_bytes()


def test_audit_verify_main_with_kept_head(tmp_path: Path, key: SigningKey) -> None:
    path = _log_with(tmp_path, key, 2)
    pub = tmp_path / "pub.pem"
    key.public_key.save(pub)
    kept = tmp_path / "kept.head"
    kept.write_bytes((tmp_path / "h.log.head").read_bytes())
    assert audit_verify_main(str(path), str(pub), str(kept))[0] == 0
    path.write_bytes(path.read_bytes().splitlines(keepends=True)[0])
    code, msg = audit_verify_main(str(path), str(pub), str(kept))
    assert code == 1 and "truncated" in msg


# ============================================================ shared writers
def _append_shared(path: str, seed: bytes, writer: int, count: int) -> None:
    log = AuditLog.open(path, SigningKey.from_seed(seed), checkpoint_interval=7, shared=True)
    for i in range(count):
        log.append("collection", f"worker-{writer}", n=i)
    log.close()


def test_processes_sharing_a_log_extend_one_chain(tmp_path: Path, key: SigningKey) -> None:
    """Worker processes of one aggregator append concurrently; every entry lands once, in one verified chain."""
    import multiprocessing

    path = tmp_path / "audit.log"
    seed = bytes(range(100, 132))  # the `key` fixture's seed
    AuditLog.open(path, key, checkpoint_interval=7, shared=True).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_shared, args=(str(path), seed, w, 25)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    result = verify_log(path, key.public_key)
    assert result.ok, result.describe()
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    by_writer = [sum(e["actor"] == f"worker-{w}" for e in entries) for w in range(3)]
    assert by_writer == [25, 25, 25]
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    assert sum(e["kind"] == "checkpoint" for e in entries) == len(entries) // 8  # every 8th slot, none skipped


def test_a_shared_writer_waits_for_an_exclusive_one_then_refuses(tmp_path: Path, key: SigningKey, monkeypatch) -> None:
    monkeypatch.setattr(audit_log, "_SHARED_LOCK_WAIT_SECONDS", 0.2)
    path = tmp_path / "audit.log"
    with AuditLog.open(path, key):  # a process holding the log for itself
        with pytest.raises(AuditLogCorrupt, match="already open"):
            AuditLog.open(path, key, shared=True)
    shared = AuditLog.open(path, key, shared=True)
    shared.append("collection", "worker-0")
    with pytest.raises(AuditLogCorrupt, match="already open"):
        with AuditLog.open(path, key):  # an exclusive opener while a shared one is between appends: it gets the file...
            shared.append("collection", "worker-0")  # ...and the shared writer refuses after its wait
    shared.close()
    assert verify_log(path, key.public_key).ok
