"""README's main job: `twinmpc demo` as a newcomer runs it (real processes, exit code)."""

from __future__ import annotations

import subprocess
import sys


def _demo(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinmpc.services.cli", "demo", "--windows", "1", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=240)


def test_demo_exact(tmp_path):
    out = _demo("--intersections", "40", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all results exact" in out.stdout


def test_demo_three_aggregators_with_dp(tmp_path):
    out = _demo("--intersections", "40", "--aggregators", "3", "--epsilon", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "within the stated DP error" in out.stdout and "sigma^2" in out.stdout


def test_demo_through_mqtt_broker_and_edge_agents(tmp_path, mosquitto_broker):
    out = _demo("--intersections", "40", "--mqtt", f"{mosquitto_broker.host}:{mosquitto_broker.port}", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "8 district gateways" in out.stdout and "all results exact" in out.stdout
