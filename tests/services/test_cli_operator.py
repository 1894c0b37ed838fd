"""Operator conveniences of the CLI: generated aggregator configs, CKKS keys from a file, window arguments."""

from __future__ import annotations

import json
import os

from tests.paths import REPO
from tests.services.test_cli import twinmpc
from tests.services.test_cli_errors import assert_one_error
from twinmpc.services.aggregator.config import load_aggregator_config

MAX_ARG_STRLEN = 32 * 4096  # Linux: the longest single argument execve accepts


def test_init_config_writes_a_config_that_serves_and_never_overwrites(tmp_path):
    out = twinmpc("aggregator", "init-config", "--identity", "agg1", "--listen", "0.0.0.0:7001", "--out", "agg1.toml",
                  "--metrics-listen", "127.0.0.1:9465", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = load_aggregator_config(tmp_path / "agg1.toml")
    assert (cfg.identity, cfg.listen, cfg.metrics_listen) == ("agg1", "0.0.0.0:7001", "127.0.0.1:9465")
    assert cfg.tls.cert == tmp_path / "pki" / "agg1.crt" and cfg.tls.ca == tmp_path / "pki" / "ca.crt"
    assert cfg.data_dir == tmp_path / "agg1-data" and cfg.database_url is None
    before = (tmp_path / "agg1.toml").read_text()
    again = twinmpc("aggregator", "init-config", "--identity", "agg1", "--listen", "0.0.0.0:7001", "--out", "agg1.toml", cwd=tmp_path)
    assert_one_error(again, 2, "agg1.toml")
    assert (tmp_path / "agg1.toml").read_text() == before


def test_init_config_for_a_replica_on_postgres(tmp_path):
    out = twinmpc("aggregator", "init-config", "--identity", "leader", "--listen", "0.0.0.0:7000", "--out", "leader.toml",
                  "--database-url", "postgresql://twinmpc@db:5432/twinmpc", "--database-password-env", "TWINMPC_DB_PASSWORD",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = load_aggregator_config(tmp_path / "leader.toml")
    assert (cfg.database_url, cfg.database_password_env) == ("postgresql://twinmpc@db:5432/twinmpc", "TWINMPC_DB_PASSWORD")


def test_init_config_refuses_what_would_not_serve(tmp_path):
    bad_listen = twinmpc("aggregator", "init-config", "--identity", "a", "--listen", "7000", "--out", "a.toml", cwd=tmp_path)
    assert_one_error(bad_listen, 2, "HOST:PORT")
    secret_in_url = twinmpc("aggregator", "init-config", "--identity", "a", "--listen", "0.0.0.0:7000", "--out", "a.toml",
                            "--database-url", "postgresql://u:hunter2@db/x", cwd=tmp_path)
    assert_one_error(secret_in_url, 2, "password")
    assert not (tmp_path / "a.toml").exists()


def test_init_keys_creates_the_shared_keys_once(tmp_path):
    """Replicas share these two keys; a second run must keep them, never replace them."""
    first = twinmpc("aggregator", "init-keys", "--dir", "keys", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    files = {name: (tmp_path / "keys" / name) for name in ("hpke_key.json", "datastore.key")}
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files.values())
    before = {name: f.read_bytes() for name, f in files.items()}
    again = twinmpc("aggregator", "init-keys", "--dir", "keys", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert {name: f.read_bytes() for name, f in files.items()} == before
    assert_one_error(twinmpc("aggregator", "init-keys", "--dir", "k2", "--hpke-suite", "rot13", cwd=tmp_path), 2, "rot13")


def test_ckks_task_from_a_public_key_file(tmp_path, cluster2):
    """A CKKS public key is ~0.5 MB: longer than one argument may be, so it comes from a file."""
    env_key = "TWINMPC_HE_PASSPHRASE"
    os.environ[env_key] = "correct horse battery staple"
    try:
        gen = twinmpc("he-key", "generate", "--mode", "ckks", "--out", "ckks.key", cwd=tmp_path)
    finally:
        os.environ.pop(env_key)
    assert gen.returncode == 0, gen.stderr
    (tmp_path / "ckks.pub").write_text(gen.stdout)
    assert len(gen.stdout.strip()) > MAX_ARG_STRLEN  # `--he-public-key "$(cat ckks.pub)"` cannot work
    cluster2.credentials("admin", "admin")
    common = ["task", "create", "--endpoint", cluster2.endpoints[0], "--measurement", '{"type": "fixedpointvec", "length": 4, "frac_bits": 16, "clip": 1.0}',
              "--mode", "ckks", "--pki-dir", str(cluster2.pki_dir), "--min-batch-size", "1"]
    both = twinmpc(*common, "--he-public-key", "x", "--he-public-key-file", "ckks.pub", cwd=tmp_path)
    assert_one_error(both, 2, "not both")
    missing = twinmpc(*common, "--he-public-key-file", "nope.pub", cwd=tmp_path)
    assert_one_error(missing, 2, "nope.pub")
    created = twinmpc(*common, "--he-public-key-file", "ckks.pub", "--out", "task.json", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    task = json.loads((tmp_path / "task.json").read_text())
    assert task["mode"] == "ckks" and task["he_public_key"] == gen.stdout.strip()
    listed = twinmpc("task", "list", "--endpoint", cluster2.endpoints[0], "--pki-dir", str(cluster2.pki_dir), cwd=tmp_path)
    assert listed.returncode == 0 and task["task_id"] in listed.stdout


def test_collect_window_is_a_start_or_latest(tmp_path):
    out = twinmpc("collect", "--task", str(REPO / "examples" / "task.json"), "--window", "yesterday",
                  "--collector-key", "c.key", "--pki-dir", "pki", cwd=tmp_path)
    assert_one_error(out, 2, "'latest'")
