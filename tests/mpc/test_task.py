"""Task documents (mpc.task): valid documents parse, every malformed key is
named in the `InvalidTask` it raises, JSON and TOML round trips."""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from tests.paths import REPO, OUR_VECTORS, VDAF_VECTORS  # noqa: F401
import pytest

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.measurements import Histogram
from twinmpc.mpc.ring_vdaf import TwinRing64
from twinmpc.mpc.task import Task, b64decode, b64encode

AGG_KEYS = [HpkeKeypair.from_private_bytes(j, "x25519-hkdf-sha256-aes128gcm", bytes([j + 1]) * 32) for j in range(3)]
COLLECTOR = HpkeKeypair.from_private_bytes(9, "x25519-hkdf-sha256-aes128gcm", bytes([42]) * 32)
TASK_ID = b64encode(bytes(range(32)))


def base_doc(k: int = 2, measurement: dict | None = None) -> dict[str, Any]:
    return {
        "task_id": TASK_ID,
        "measurement": measurement or {"type": "histogram", "buckets": 4},
        "vdaf": "twinring64",
        "aggregators": [
            {"endpoint": f"agg{j}.city.example:443", "hpke_config": b64encode(AGG_KEYS[j].config.encode())} for j in range(k)
        ],
        "collector_hpke_config": b64encode(COLLECTOR.config.encode()),
        "window_seconds": 300,
        "min_batch_size": 100,
    }


def to_toml(doc: dict[str, Any]) -> str:
    """Tiny TOML writer for task documents (strings, numbers, bools, tables, arrays)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    return "".join(f"{k} = {value(v)}\n" for k, v in doc.items())


VALID_DOCS = {
    "minimal-histogram": base_doc(),
    "three-aggregators-count": base_doc(3, {"type": "count"}),
    "sum": base_doc(2, {"type": "sum", "bits": 16}),
    "mean": base_doc(2, {"type": "mean", "bits": 8}),
    "sumvec": base_doc(2, {"type": "sumvec", "length": 1000, "bits": 4}),
    "fixedpointvec-with-dp": {
        **base_doc(3, {"type": "fixedpointvec", "length": 10, "frac_bits": 16, "clip": 1.0}),
        "dp": {"algo": "discrete-gaussian", "epsilon": 1.0, "delta": 1e-9},
        "max_skew_seconds": 0,
        "description": "FedAvg round for signal-timing model",
    },
    "prio3-scheme": {**base_doc(), "vdaf": "prio3"},
    "paillier-mode": {
        "task_id": TASK_ID,
        "measurement": {"type": "sum", "bits": 32},
        "mode": "paillier",
        "aggregators": [{"endpoint": "agg0:443"}],
        "he_public_key": b64encode(b'{"n": "123"}'),
        "window_seconds": 60,
        "min_batch_size": 1,
    },
    "ckks-mode": {
        **base_doc(),
        "measurement": {"type": "fixedpointvec", "length": 10000, "frac_bits": 20, "clip": 10.0},
        "mode": "ckks",
        "he_public_key": b64encode(b"ctx"),
    },
}


def sample_documents() -> list[Path]:
    """Task documents shipped in the repo (examples, deploy configs, docs): any TOML/JSON with a top-level task_id."""
    found = []
    for folder in ("examples", "deploy", "docs", "config"):
        for path in sorted((REPO / folder).glob("**/*")):
            if path.suffix not in (".toml", ".json"):
                continue
            try:
                doc = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                continue  # not a task document; its own tests parse it
            if isinstance(doc, dict) and "task_id" in doc:
                found.append(path)
    return found


@pytest.mark.parametrize("path", sample_documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_repo_sample_documents_parse(path: Path) -> None:
    task = Task.from_toml(path) if path.suffix == ".toml" else Task.from_json(path.read_text())
    assert Task.from_json(task.to_json()) == task


@pytest.mark.parametrize("name", sorted(VALID_DOCS))
def test_valid_documents_parse_and_round_trip(name: str, tmp_path: Path) -> None:
    doc = VALID_DOCS[name]
    task = Task.from_dict(copy.deepcopy(doc))
    assert task.task_id == bytes(range(32))
    assert task.task_id_b64 == TASK_ID
    assert Task.from_json(task.to_json()) == task
    assert Task.from_json(json.dumps(doc).encode()) == task
    path = tmp_path / "task.toml"
    path.write_text(to_toml(doc))
    assert Task.from_toml(path) == task
    path.write_text(to_toml(task.to_dict()))
    assert Task.from_toml(path) == task


def test_defaults_and_derived_values() -> None:
    task = Task.from_dict(base_doc(3))
    assert (task.mode, task.max_skew_seconds, task.dp, task.description) == ("shares", 60, {"algo": "none"}, "")
    assert task.num_aggregators == 3
    assert task.aggregators[1].hpke_config == AGG_KEYS[1].config
    assert task.collector_hpke_config == COLLECTOR.config
    assert task.measurement == Histogram(4)
    assert task.ctx() == b"twinmpc/v1/task/" + bytes(range(32))
    assert task.window_start(1_700_000_123) == 1_700_000_100
    assert isinstance(task.scheme, TwinRing64) and task.scheme.SHARES == 3
    assert task.scheme is task.scheme  # cached


def test_to_json_is_canonical() -> None:
    text = Task.from_dict(base_doc()).to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_b64_helpers() -> None:
    assert b64encode(b"\xfb\xff") == "-_8"
    assert b64decode("-_8", "x") == b"\xfb\xff"
    with pytest.raises(InvalidTask, match="x must be a base64url string"):
        b64decode(5, "x")  # type: ignore[arg-type]


# --- rejections -------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["colour", "Task_id", "min_batch"])
def test_unknown_key_named(key: str) -> None:
    with pytest.raises(InvalidTask, match=f"unknown task key.*{key}"):
        Task.from_dict({**base_doc(), key: 1})


@pytest.mark.parametrize("key", ["task_id", "measurement", "aggregators", "window_seconds", "min_batch_size"])
def test_missing_key_named(key: str) -> None:
    doc = base_doc()
    del doc[key]
    with pytest.raises(InvalidTask, match=f"missing task key.*{key}"):
        Task.from_dict(doc)


def bad(key: str, value: Any) -> dict[str, Any]:
    doc = base_doc()
    doc[key] = value
    return doc


BAD_VALUES = [
    (bad("task_id", b64encode(bytes(31))), "task_id"),
    (bad("task_id", "!!!not base64!!!"), "task_id"),
    (bad("task_id", 7), "task_id"),
    (bad("window_seconds", 0), "window_seconds"),
    (bad("window_seconds", 366 * 86400 + 1), "window_seconds"),
    (bad("window_seconds", "60"), "window_seconds"),
    (bad("window_seconds", True), "window_seconds"),
    (bad("window_seconds", 60.0), "window_seconds"),
    (bad("min_batch_size", 0), "min_batch_size"),
    (bad("min_batch_size", -5), "min_batch_size"),
    (bad("max_skew_seconds", -1), "max_skew_seconds"),
    (bad("max_skew_seconds", 86401), "max_skew_seconds"),
    (bad("mode", "plaintext"), "mode"),
    (bad("vdaf", "prio2"), "vdaf"),
    (bad("dp", "laplace"), "dp"),
    (bad("measurement", {"type": "median"}), "median"),
    (bad("measurement", {"type": "sum", "bits": 99}), "bits"),
    (bad("aggregators", {"endpoint": "x"}), "aggregators"),
    (bad("aggregators", ["agg0:443", "agg1:443"]), "aggregators"),
    (bad("aggregators", [{"endpoint": "a", "hpke_config": b64encode(AGG_KEYS[0].config.encode())}]), "at least 2 aggregators"),
    (bad("aggregators", []), "at least 2 aggregators"),
    (bad("collector_hpke_config", "AAAA"), "collector_hpke_config"),
    (bad("collector_hpke_config", b64encode(COLLECTOR.config.encode() + b"\x00")), "collector_hpke_config"),
    (bad("he_public_key", 12), "he_public_key"),
]


@pytest.mark.parametrize(("doc", "key"), BAD_VALUES, ids=[f"{i}-{k}" for i, (_, k) in enumerate(BAD_VALUES)])
def test_bad_value_names_the_key(doc: dict, key: str) -> None:
    with pytest.raises(InvalidTask, match=key):
        Task.from_dict(doc)


def test_aggregator_entry_errors_name_the_entry() -> None:
    doc = base_doc()
    doc["aggregators"][1]["weight"] = 2
    with pytest.raises(InvalidTask, match=r"aggregators\[1\]: unknown key.*weight"):
        Task.from_dict(doc)
    doc = base_doc()
    doc["aggregators"][0]["endpoint"] = ""
    with pytest.raises(InvalidTask, match=r"aggregators\[0\]\.endpoint"):
        Task.from_dict(doc)
    doc = base_doc()
    del doc["aggregators"][1]["hpke_config"]
    with pytest.raises(InvalidTask, match="hpke_config for every aggregator"):
        Task.from_dict(doc)
    doc = base_doc()
    doc["aggregators"][1]["hpke_config"] = b64encode(b"\x00\x63\x00\x00")
    with pytest.raises(InvalidTask, match=r"aggregators\[1\]\.hpke_config.*unknown HPKE suite"):
        Task.from_dict(doc)


def test_shares_mode_needs_collector_config() -> None:
    doc = base_doc()
    del doc["collector_hpke_config"]
    with pytest.raises(InvalidTask, match="collector_hpke_config"):
        Task.from_dict(doc)


@pytest.mark.parametrize("mode", ["paillier", "ckks"])
def test_he_modes_need_public_key(mode: str) -> None:
    with pytest.raises(InvalidTask, match="he_public_key"):
        Task.from_dict({**base_doc(), "mode": mode})


def test_he_mode_needs_an_aggregator() -> None:
    doc = {**VALID_DOCS["paillier-mode"], "aggregators": []}
    with pytest.raises(InvalidTask, match="at least one aggregator"):
        Task.from_dict(doc)


@pytest.mark.parametrize("doc", [[], "task", None, 3])
def test_non_table_document(doc) -> None:
    with pytest.raises(InvalidTask, match="JSON object"):
        Task.from_dict(doc)


def test_invalid_json_and_toml(tmp_path: Path) -> None:
    with pytest.raises(InvalidTask, match="not valid JSON"):
        Task.from_json("{task_id: 1")
    path = tmp_path / "t.toml"
    path.write_text("task_id = \n")
    with pytest.raises(InvalidTask, match="t.toml"):
        Task.from_toml(path)


def test_constructor_validates_too() -> None:
    task = Task.from_dict(base_doc())
    with pytest.raises(InvalidTask, match="task_id"):
        Task(bytes(5), task.measurement, task.aggregators, 60, 1)
    with pytest.raises(InvalidTask, match="mode"):
        Task(task.task_id, task.measurement, task.aggregators, 60, 1, mode="x")


def test_non_finite_json_clip_rejected() -> None:
    doc = base_doc(2, {"type": "fixedpointvec", "length": 1, "frac_bits": 8, "clip": math.inf})
    with pytest.raises(InvalidTask, match="clip"):
        Task.from_json(json.dumps(doc))


@pytest.mark.parametrize(
    "text",
    [
        TASK_ID[:10] + "!" + TASK_ID[10:],  # non-alphabet character (ignored by a lenient decoder)
        TASK_ID[:10] + " " + TASK_ID[10:],
        TASK_ID.replace("_", "/").replace("-", "+") if ("_" in TASK_ID or "-" in TASK_ID) else "+" + TASK_ID[1:],
        TASK_ID[:-1] + "9",  # "8" with a stray low bit set in the last character: a second text for the same id
    ],
)
def test_task_id_must_be_canonical_base64url(text: str) -> None:
    with pytest.raises(InvalidTask, match="task_id is not (valid|canonical) base64url"):
        Task.from_dict(bad("task_id", text))
