"""The `twinmpc` CLI as an operator uses it: real processes, files, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def twinmpc(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinmpc.services.cli", *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120)


def test_pki_init_and_issue(tmp_path):
    assert twinmpc("pki", "init", "--dir", "pki", cwd=tmp_path).returncode == 0
    out = twinmpc("pki", "issue", "--dir", "pki", "--role", "edge", "--identity", "edge-7", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "pki" / "edge-7.key").stat().st_mode & 0o077 == 0
    bad = twinmpc("pki", "issue", "--dir", "pki", "--role", "mayor", "--identity", "x", cwd=tmp_path)
    assert bad.returncode == 2 and "role" in bad.stderr.lower()


def test_task_file_errors_exit_2(tmp_path):
    (tmp_path / "task.json").write_text('{"task_id": "x"}')
    out = twinmpc("task", "card", "--task", "task.json", cwd=tmp_path)
    assert out.returncode == 2 and "task.json" in out.stderr


def test_audit_verify_detects_tampering(tmp_path):
    from twinmpc.crypto.audit_log import AuditLog
    from twinmpc.crypto.signing import SigningKey

    key = SigningKey.generate()
    key.public_key.save(tmp_path / "audit.pub")
    log = AuditLog.open(tmp_path / "audit.log", key)
    for i in range(5):
        log.append("collection", "controller-1", window_start=i, report_count=10 + i)
    if hasattr(log, "close"):
        log.close()
    ok = twinmpc("audit", "verify", "audit.log", "--key", "audit.pub", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    lines = (tmp_path / "audit.log").read_text().splitlines()
    lines[2] = lines[2].replace('"report_count":12', '"report_count":99')
    (tmp_path / "audit.log").write_text("\n".join(lines) + "\n")
    bad = twinmpc("audit", "verify", "audit.log", "--key", "audit.pub", cwd=tmp_path)
    assert bad.returncode == 1 and "3" in bad.stderr


@pytest.mark.slow
def test_end_to_end_by_hand(tmp_path, loop_thread):
    """An operator's session: cluster up, task create, upload from stdin, collect, task card."""
    import time

    from twinmpc.services.twin.local_cluster import LocalCluster

    cluster = LocalCluster(tmp_path, k=2, processes=True)
    loop_thread.run(cluster.start())
    try:
        cluster.credentials("admin", "admin")
        cluster.credentials("edge", "edge-1")
        cluster.credentials("controller", "controller-1")
        assert twinmpc("collector-key", "generate", "--out", "collector.key", cwd=tmp_path).returncode == 0
        args = ["task", "create", "--measurement", '{"type": "sum", "bits": 8}', "--collector-key", "collector.key",
                "--pki-dir", "pki", "--window-seconds", "2", "--min-batch-size", "3", "--out", "task.json"]
        for e in cluster.endpoints:
            args += ["--endpoint", e]
        created = twinmpc(*args, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        now = int(time.time())
        window = now - now % 2
        up = twinmpc("upload", "--task", "task.json", "--pki-dir", "pki", "--time", str(window), cwd=tmp_path, stdin="5\n6\n7\n")
        assert up.returncode == 0, up.stderr
        bad = twinmpc("upload", "--task", "task.json", "--pki-dir", "pki", cwd=tmp_path, stdin="5\n\n300\n")
        assert bad.returncode == 2 and "line 3" in bad.stderr  # the batch names the offending line
        not_json = twinmpc("upload", "--task", "task.json", "--pki-dir", "pki", cwd=tmp_path, stdin="5\n{\n")
        assert not_json.returncode == 2 and "line 2" in not_json.stderr
        time.sleep(max(0, window + 2 - time.time()) + 0.1)
        got = twinmpc("collect", "--task", "task.json", "--window", str(window), "--collector-key", "collector.key", "--pki-dir", "pki", cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["result"] == 18
        again_too_early = twinmpc("collect", "--task", "task.json", "--window", str(window + 3600), "--collector-key", "collector.key", "--pki-dir", "pki", cwd=tmp_path)
        assert again_too_early.returncode == 1 and "FAILED_PRECONDITION" in again_too_early.stderr
        card = twinmpc("task", "card", "--task", "task.json", cwd=tmp_path)
        assert card.returncode == 0 and '"computes"' in card.stdout
        at_leader = twinmpc("task", "card", "--task", "task.json", "--config", "agg0.toml", cwd=tmp_path)
        assert at_leader.returncode == 0 and "no budget configured" in at_leader.stdout
        listed = twinmpc("task", "list", "--endpoint", cluster.endpoints[0], "--pki-dir", "pki", cwd=tmp_path)
        assert listed.returncode == 0 and json.loads(created.stdout)["task_id"] in listed.stdout
    finally:
        loop_thread.run(cluster.stop())


def test_aggregator_serve_with_missing_certificate_exits_1(tmp_path):
    (tmp_path / "agg.toml").write_text('data_dir = "d"\nlisten = "127.0.0.1:0"\n[tls]\ncert = "nope.crt"\nkey = "nope.key"\nca = "ca.crt"\n')
    out = twinmpc("aggregator", "serve", "--config", "agg.toml", cwd=tmp_path)
    assert out.returncode == 1 and "could not start" in out.stderr


def test_aggregator_serve_with_bad_config_exits_2(tmp_path):
    (tmp_path / "agg.toml").write_text('data_dir = "d"\nlisten = 5\n')
    out = twinmpc("aggregator", "serve", "--config", "agg.toml", cwd=tmp_path)
    assert out.returncode == 2 and "listen" in out.stderr


def test_paillier_task_by_hand(tmp_path, loop_thread):
    """Homomorphic mode from the command line: key, task, upload, collect."""
    import os
    import time

    from twinmpc.services.twin.local_cluster import LocalCluster

    cluster = LocalCluster(tmp_path, k=1, processes=True)
    loop_thread.run(cluster.start())
    env_pass = {"TWINMPC_HE_PASSPHRASE": "correct horse battery staple"}
    os.environ.update(env_pass)
    try:
        cluster.credentials("admin", "admin")
        cluster.credentials("edge", "edge-1")
        cluster.credentials("controller", "controller-1")
        no_pass = subprocess.run([sys.executable, "-m", "twinmpc.services.cli", "he-key", "generate", "--mode", "paillier", "--out", "x.key",
                                  "--passphrase-env", "UNSET_VAR"], cwd=tmp_path, capture_output=True, text=True)
        assert no_pass.returncode == 2 and "UNSET_VAR" in no_pass.stderr
        gen = twinmpc("he-key", "generate", "--mode", "paillier", "--out", "he.key", cwd=tmp_path)
        assert gen.returncode == 0, gen.stderr
        assert (tmp_path / "he.key").stat().st_mode & 0o077 == 0
        created = twinmpc("task", "create", "--endpoint", cluster.endpoints[0], "--measurement", '{"type": "sum", "bits": 8}',
                          "--mode", "paillier", "--he-public-key", gen.stdout.strip(), "--pki-dir", "pki",
                          "--window-seconds", "2", "--min-batch-size", "2", "--out", "task.json", cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        now = int(time.time())
        window = now - now % 2
        up = twinmpc("upload", "--task", "task.json", "--pki-dir", "pki", "--time", str(window), cwd=tmp_path, stdin="40\n2\n")
        assert up.returncode == 0, up.stderr
        time.sleep(max(0, window + 2 - time.time()) + 0.1)
        missing = twinmpc("collect", "--task", "task.json", "--window", str(window), "--pki-dir", "pki", cwd=tmp_path)
        assert missing.returncode == 2 and "--he-key" in missing.stderr
        got = twinmpc("collect", "--task", "task.json", "--window", str(window), "--he-key", "he.key", "--pki-dir", "pki", cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["result"] == 42
    finally:
        for k in env_pass:
            os.environ.pop(k, None)
        loop_thread.run(cluster.stop())


def test_masks_task_is_collected_with_the_collector_hpke_key_and_carded_with_its_round_noise(tmp_path):
    """A masks result is sealed to the collector's HPKE key: collect asks for that key, not a homomorphic one."""
    from twinmpc.crypto.seal import HpkeKeypair
    from twinmpc.mpc.task import Task, b64encode

    task = Task.from_dict({
        "task_id": b64encode(bytes(range(32))), "measurement": {"type": "sumvec", "length": 3, "bits": 8}, "mode": "masks",
        "aggregators": [{"endpoint": "127.0.0.1:1"}], "collector_hpke_config": b64encode(HpkeKeypair.generate(0).config.encode()),
        "window_seconds": 60, "min_batch_size": 3,
    })
    (tmp_path / "masks.json").write_text(task.to_json())
    out = twinmpc("collect", "--task", "masks.json", "--window", "0", "--pki-dir", "pki", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == "error: mode 'masks' needs --collector-key"
    card = twinmpc("task", "card", "--task", "masks.json", cwd=tmp_path)
    assert card.returncode == 0, card.stderr
    doc = json.loads(card.stdout)
    assert "masks" in doc and "noise_per_collection" not in doc
