"""Operator mistakes through the real CLI: an exit code and one `error:` line, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.services.test_cli import twinmpc
from twinmpc.services import pki


def assert_one_error(out: subprocess.CompletedProcess, code: int, needle: str) -> None:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert needle in lines[0], lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    pki.init_ca(d, passphrase_env=None)
    pki.issue(d, "aggregator", "agg0", d, passphrase_env=None)
    return d


def agg_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "agg0.toml"
    path.write_text(f'listen = "127.0.0.1:{port}"\ndata_dir = "agg0-data"\nidentity = "agg0"\n{extra}'
                    '[tls]\ncert = "pki/agg0.crt"\nkey = "pki/agg0.key"\nca = "pki/ca.crt"\n')
    return path


def test_version(tmp_path):
    out = twinmpc("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"twinmpc {version('twinmpc')}"


@pytest.mark.parametrize("command", [["aggregator", "serve"], ["aggregator", "health"], ["edge", "run"]])
def test_missing_config_file(tmp_path, command):
    assert_one_error(twinmpc(*command, "--config", "nope.toml", cwd=tmp_path), 2, "nope.toml")


def test_aggregator_config_with_a_bad_listen_address(tmp_path, pki_dir):
    (tmp_path / "agg0.toml").write_text(agg_config(tmp_path, 1).read_text().replace("127.0.0.1:1", "localhost"))
    assert_one_error(twinmpc("aggregator", "serve", "--config", "agg0.toml", cwd=tmp_path), 2, "listen")


def test_aggregator_database_password_variable_unset(tmp_path, pki_dir):
    agg_config(tmp_path, 0, 'database_url = "postgresql://twinmpc@127.0.0.1:5432/twinmpc"\n'
                            'database_password_env = "TWINMPC_TEST_UNSET_PASSWORD"\n')
    out = twinmpc("aggregator", "serve", "--config", "agg0.toml", cwd=tmp_path)
    assert_one_error(out, 2, "TWINMPC_TEST_UNSET_PASSWORD is not set")


def test_aggregator_postgres_down(tmp_path, pki_dir):
    agg_config(tmp_path, 0, f'database_url = "postgresql://twinmpc@127.0.0.1:{free_port()}/twinmpc"\n')
    out = twinmpc("aggregator", "serve", "--config", "agg0.toml", cwd=tmp_path)
    assert_one_error(out, 1, "cannot connect to PostgreSQL")


def test_aggregator_missing_certificate(tmp_path, pki_dir):
    (pki_dir / "agg0.key").unlink()
    agg_config(tmp_path, 0)
    assert_one_error(twinmpc("aggregator", "serve", "--config", "agg0.toml", cwd=tmp_path), 1, "agg0.key")


def test_second_aggregator_on_an_occupied_port_is_refused(tmp_path, pki_dir):
    """gRPC sets SO_REUSEPORT by default: without the check both would serve, splitting traffic."""
    port = free_port()
    agg_config(tmp_path, port)
    first = subprocess.Popen([sys.executable, "-m", "twinmpc.services.cli", "aggregator", "serve", "--config", "agg0.toml",
                              "--port-file", "agg0.port"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "agg0.port").exists():
            assert first.poll() is None and time.monotonic() < deadline, "first aggregator did not start"
            time.sleep(0.05)
        second_dir = tmp_path / "other"
        second_dir.mkdir()
        (second_dir / "pki").symlink_to(pki_dir)
        agg_config(second_dir, port)  # another store, same port: an independent second aggregator
        out = twinmpc("aggregator", "serve", "--config", "agg0.toml", cwd=second_dir)
        assert_one_error(out, 1, f"127.0.0.1:{port} is already in use")
        assert not (second_dir / "agg0-data").exists()  # refused before touching a store
        healthy = twinmpc("aggregator", "health", "--config", "agg0.toml", cwd=tmp_path)
        assert healthy.returncode == 0 and "SERVING" in healthy.stdout, healthy.stderr
    finally:
        first.terminate()
        first.wait(15)


def test_aggregator_metrics_port_in_use(tmp_path, pki_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        agg_config(tmp_path, 0, f'metrics_listen = "127.0.0.1:{taken.getsockname()[1]}"\n')
        out = twinmpc("aggregator", "serve", "--config", "agg0.toml", cwd=tmp_path)
    assert_one_error(out, 1, "aggregator could not start: metrics_listen")


def test_health_of_an_aggregator_that_is_not_running(tmp_path, pki_dir):
    agg_config(tmp_path, free_port())
    assert_one_error(twinmpc("aggregator", "health", "--config", "agg0.toml", cwd=tmp_path), 1, "UNAVAILABLE")


def test_worker_processes_of_one_aggregator_may_share_its_port(tmp_path, pki_dir, loop_thread):
    """`reuse_port=True` is the seam for an aggregator's own workers (all of them set it)."""
    from twinmpc.services.aggregator.config import load_aggregator_config
    from twinmpc.services.aggregator.server import ListenError, start_aggregator, stop_aggregator

    port = free_port()
    started = []
    try:
        for name in ("w1", "w2"):
            (tmp_path / name).mkdir()
            (tmp_path / name / "pki").symlink_to(pki_dir)
            cfg = load_aggregator_config(agg_config(tmp_path / name, port))
            server, bound, core = loop_thread.run(start_aggregator(cfg, reuse_port=True))
            started.append((server, core))
            assert bound == port
        (tmp_path / "w3").mkdir()
        (tmp_path / "w3" / "pki").symlink_to(pki_dir)
        with pytest.raises(ListenError, match="already in use"):
            loop_thread.run(start_aggregator(load_aggregator_config(agg_config(tmp_path / "w3", port))))
    finally:
        for server, core in started:
            loop_thread.run(stop_aggregator(server, core))


@pytest.fixture
def edge_dir(tmp_path: Path, pki_dir: Path) -> Path:
    pki.issue(pki_dir, "edge", "edge-1", pki_dir, passphrase_env=None)
    (tmp_path / "edge.toml").write_text(
        'node_id = "cabinet-1"\n[mqtt]\nhost = "127.0.0.1"\nport = 1\n[outbox]\ndir = "state"\n'
        '[upload]\nleader = "127.0.0.1:1"\nca_file = "pki/ca.crt"\ncert_file = "pki/edge-1.crt"\nkey_file = "pki/edge-1.key"\n'
        '[[streams]]\nname = "counts"\ntopics = ["city/+/count"]\ntask = "task.json"\n[streams.measurement]\nfield = "count"\n'
    )
    return tmp_path


def test_edge_agent_missing_certificate(edge_dir):
    (edge_dir / "pki" / "edge-1.key").unlink()
    assert_one_error(twinmpc("edge", "run", "--config", "edge.toml", cwd=edge_dir), 1, "edge-1.key")


def test_edge_agent_missing_task_file(edge_dir):
    assert_one_error(twinmpc("edge", "run", "--config", "edge.toml", cwd=edge_dir), 2, "task.json")


def test_edge_agent_metrics_port_in_use(edge_dir):
    from tests.helpers import make_task

    (edge_dir / "task.json").write_text(make_task({"type": "sum", "bits": 8}).task.to_json())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        text = (edge_dir / "edge.toml").read_text()
        (edge_dir / "edge.toml").write_text(f'metrics_listen = "127.0.0.1:{taken.getsockname()[1]}"\n' + text)
        out = twinmpc("edge", "run", "--config", "edge.toml", cwd=edge_dir)
    assert_one_error(out, 1, "metrics_listen")


def test_edge_agent_invalid_config(edge_dir):
    (edge_dir / "edge.toml").write_text((edge_dir / "edge.toml").read_text().replace("port = 1\n", "port = 99999\n"))
    assert_one_error(twinmpc("edge", "run", "--config", "edge.toml", cwd=edge_dir), 2, "mqtt.port")
