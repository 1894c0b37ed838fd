"""The key rotator on a real SQLite store: migration from hpke_key.json, sealing at rest, rotation,
retirement (refusals, the opener), and a second process on the same database following along."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time

import pytest

from twinmpc.crypto.audit_verify import verify_log
from twinmpc.crypto.signing import VerifyKey
from twinmpc.mpc.client import shard_report
from twinmpc.mpc.errors import InvalidTask, SealError
from twinmpc.mpc.task import Task, b64encode
from twinmpc.services.aggregator import key_rotator
from twinmpc.services.aggregator.key_rotator import KEY_SET_BLOB, KeyRefused, KeyRotator
from twinmpc.services.aggregator.privacy import CollectionGuard
from twinmpc.services.keyfiles import KeyFileError, write_hpke_key
from twinmpc.services.storage import NotFound, SqliteDatastore, TaskRecord
from tests.helpers import make_task

SUITE = "x25519-hkdf-sha256-aes128gcm"


class Node:
    """What an aggregator process holds for its keys: store, audit guard, rotator (one per data_dir)."""

    def __init__(self, data_dir, db_path, datastore_key: bytes) -> None:
        data_dir.mkdir(mode=0o700, exist_ok=True)
        self.data_dir = data_dir
        self.store = SqliteDatastore(db_path, datastore_key)
        self.guard = CollectionGuard(data_dir, self.store)
        self.keys = KeyRotator(self.store, datastore_key, data_dir, SUITE, self.guard, workers=1)

    def audit(self) -> list[dict]:
        assert verify_log(self.data_dir / "audit.log", VerifyKey.load(self.data_dir / "audit_signing.pub")).ok
        return [json.loads(line) for line in (self.data_dir / "audit.log").read_text().splitlines()]

    def close(self) -> None:
        self.keys.close()
        self.guard.close()
        self.store.close()


@pytest.fixture
def dskey() -> bytes:
    return os.urandom(32)


@pytest.fixture
def node(tmp_path, dskey):
    n = Node(tmp_path / "agg0-data", tmp_path / "agg.sqlite3", dskey)
    yield n
    n.close()


def _task_pinning(config) -> Task:
    """A 2-aggregator task whose aggregator 0 seals to `config`."""
    doc = make_task({"type": "sum", "bits": 8}).task.to_dict()
    doc["aggregators"][0]["hpke_config"] = b64encode(config.encode())
    return Task.from_dict(doc)


def _opens(node: Node, task: Task, config_id_of_report_key) -> bytes | Exception:
    report = shard_report(task, 7, time=1_700_000_000)
    assert report.sealed_shares[0][0] == config_id_of_report_key
    (result,) = node.keys.opener.open_many(task, 0, [report])
    return result


def test_an_existing_hpke_key_json_becomes_the_first_key_of_the_set(tmp_path, dskey):
    data = tmp_path / "agg0-data"
    data.mkdir(mode=0o700)
    legacy = write_hpke_key(data / "hpke_key.json", SUITE, config_id=1)  # as `aggregator init-keys` writes it
    node = Node(data, tmp_path / "agg.sqlite3", dskey)
    try:
        assert node.keys.current.private_bytes() == legacy.private_bytes()
        assert [e.state for e in node.keys.key_set.entries] == ["active"]
        (event,) = [e for e in node.audit() if e["kind"] == "key_event"]
        assert event["fields"] == {"action": "import", "config_id": 1, "suite": SUITE, "source": "hpke_key.json",
                                   "key_sha256": event["fields"]["key_sha256"]}
    finally:
        node.close()
    (data / "hpke_key.json").unlink()  # after the first start the database holds the set
    again = Node(data, tmp_path / "agg.sqlite3", dskey)
    try:
        assert again.keys.current.private_bytes() == legacy.private_bytes()
        assert not (data / "hpke_key.json").exists()
        assert [e["fields"]["action"] for e in again.audit() if e["kind"] == "key_event"] == ["import"]  # not twice
    finally:
        again.close()


def test_the_set_is_sealed_in_the_database_under_the_datastore_key(tmp_path, node):
    secret = node.keys.current.private_bytes()
    with sqlite3.connect(tmp_path / "agg.sqlite3") as db:
        (blob,) = db.execute("SELECT value FROM blobs WHERE name=?", (KEY_SET_BLOB,)).fetchone()
    assert secret not in blob and b64encode(secret).encode() not in blob and base64.b64encode(secret) not in blob
    (tmp_path / "other-data").mkdir()
    other = SqliteDatastore(tmp_path / "agg.sqlite3", os.urandom(32))
    guard = CollectionGuard(tmp_path / "other-data", other)
    try:
        with pytest.raises(KeyFileError, match="datastore.key"):
            KeyRotator(other, os.urandom(32), tmp_path / "other-data", SUITE, guard, workers=1)
    finally:
        guard.close()
        other.close()


def test_a_world_readable_hpke_key_json_is_refused_at_first_start(tmp_path, dskey):
    data = tmp_path / "agg0-data"
    data.mkdir(mode=0o700)
    write_hpke_key(data / "hpke_key.json", SUITE, config_id=1)
    (data / "hpke_key.json").chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Node(data, tmp_path / "agg.sqlite3", dskey)


def test_rotate_then_retire_and_what_the_opener_does_with_each_key(node):
    old = node.keys.current
    old_task = _task_pinning(old.config)
    node.store.put_task(old_task.task_id, TaskRecord(old_task.to_json(), 0, os.urandom(16)))
    new = node.keys.rotate("admin-1")
    assert new.config.config_id == old.config.config_id + 1 and node.keys.current is new
    new_task = _task_pinning(new.config)
    assert isinstance(_opens(node, old_task, old.config.config_id), bytes)  # the overlap: both keys open
    assert isinstance(_opens(node, new_task, new.config.config_id), bytes)
    node.keys.check_own(old.config, "aggregators[0].hpke_config")  # a task may still pin the old key

    with pytest.raises(KeyRefused, match="current key"):
        node.keys.retire(new.config.config_id, "admin-1")
    with pytest.raises(NotFound, match="config id 99"):
        node.keys.retire(99, "admin-1")
    with pytest.raises(KeyRefused, match="still pinned by 1 task"):
        node.keys.retire(old.config.config_id, "admin-1")
    assert isinstance(_opens(node, old_task, old.config.config_id), bytes)  # refusals change nothing

    entry = node.keys.retire(old.config.config_id, "admin-1", force=True)
    assert entry.state == "retired" and entry.keypair is None
    assert [k.config.config_id for k in node.keys.active] == [new.config.config_id]  # not loaded into the opener
    refused = _opens(node, old_task, old.config.config_id)
    assert isinstance(refused, SealError) and f"config id {old.config.config_id}, a key this aggregator retired" in str(refused)
    assert isinstance(_opens(node, new_task, new.config.config_id), bytes)
    with pytest.raises(InvalidTask, match="a key this aggregator retired"):
        node.keys.check_own(old.config, "aggregators[0].hpke_config")
    assert node.keys.retire(old.config.config_id, "admin-1").retired == entry.retired  # a repeat changes nothing

    events = [e for e in node.audit() if e["kind"] == "key_event"]
    assert [(e["fields"]["action"], e["actor"]) for e in events] == [("import", "local"), ("rotate", "admin-1"), ("retire", "admin-1")]
    assert events[1]["fields"]["previous_config_id"] == old.config.config_id
    assert (events[2]["fields"]["forced"], events[2]["fields"]["pinned_tasks"]) == (True, 1)


def test_a_retired_key_is_refused_by_the_worker_processes_too(node):
    """Large batches open in spawned workers: they get the new key set and name the retired key alike."""
    from twinmpc.services.aggregator.share_opener import INLINE_BELOW, ShareOpener

    old = node.keys.current
    new = node.keys.rotate("admin")
    node.keys.retire(old.config.config_id, "admin")
    opener = ShareOpener(node.keys.active, workers=2, retired=node.keys.key_set.retired_ids)
    try:
        reports = [shard_report(_task_pinning(old.config), 1, time=1_700_000_000) for _ in range(INLINE_BELOW)]
        new_task = _task_pinning(new.config)
        fresh = [shard_report(new_task, 1, time=1_700_000_000) for _ in range(INLINE_BELOW)]
        assert all("retired" in str(r) for r in opener.open_many(_task_pinning(old.config), 0, reports))
        assert all(isinstance(r, bytes) for r in opener.open_many(new_task, 0, fresh))
    finally:
        opener.close()


def test_a_second_process_on_the_same_database_follows_rotation_and_retirement(tmp_path, node, dskey, monkeypatch):
    monkeypatch.setattr(key_rotator, "REFRESH_SECONDS", 0.05)
    replica = Node(tmp_path / "agg0b-data", tmp_path / "agg.sqlite3", dskey)  # its own data_dir, no hpke_key.json
    try:
        replica.keys.start()
        assert replica.keys.current.config == node.keys.current.config
        assert not (tmp_path / "agg0b-data" / "hpke_key.json").exists()
        old = node.keys.current
        new = node.keys.rotate("admin")
        deadline = time.monotonic() + 5
        while replica.keys.current.config != new.config:
            assert time.monotonic() < deadline, "the replica never saw the rotation"
            time.sleep(0.02)
        assert isinstance(_opens(replica, _task_pinning(new.config), new.config.config_id), bytes)
        node.keys.retire(old.config.config_id, "admin")
        while old.config.config_id not in replica.keys.key_set.retired_ids:
            assert time.monotonic() < deadline, "the replica never saw the retirement"
            time.sleep(0.02)
        assert isinstance(_opens(replica, _task_pinning(old.config), old.config.config_id), SealError)
        assert "key_event" not in (tmp_path / "agg0b-data" / "audit.log").read_text()  # the replica that acted audits, once
    finally:
        replica.close()


def test_a_batch_in_flight_when_the_keys_change_finishes_under_the_old_keys(node):
    """replace_keys shuts the old worker pool down without cancelling what it was given."""
    import threading

    from twinmpc.services.aggregator.share_opener import ShareOpener

    old = node.keys.current
    task = _task_pinning(old.config)
    reports = [shard_report(task, 1, time=1_700_000_000) for _ in range(600)]
    opener = ShareOpener([old], workers=2)
    try:
        opener.open_many(task, 0, reports[:100])  # the pool is up
        results: list = []
        worker = threading.Thread(target=lambda: results.extend(opener.open_many(task, 0, reports)))
        worker.start()
        time.sleep(0.01)  # the batch is submitted (or about to be: then it runs on the new pool)
        new = node.keys.rotate("admin")
        opener.replace_keys([new, old], frozenset())
        worker.join(60)
        assert len(results) == len(reports) and all(isinstance(r, bytes) for r in results)
        opener.replace_keys([new], frozenset({old.config.config_id}))
        assert all("retired" in str(r) for r in opener.open_many(task, 0, reports[:100]))
    finally:
        opener.close()
