"""A real `twinmpc edge run` process: /metrics for Prometheus and INFO lines for each upload.

Real mosquitto, a real leader and helper (mTLS), the agent as an operator starts
it; the window is 2 s so the report is sealed and acknowledged within seconds.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiomqtt

from tests.service_utils import provision
from twinmpc.services.edge.metrics import COUNTERS

WINDOW = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_for(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_edge_agent_serves_metrics_and_logs_uploads(loop_thread, cluster2, mosquitto_broker, tmp_path):
    task = provision(loop_thread, cluster2, {"type": "sum", "bits": 8}, window_seconds=WINDOW)
    cluster2.credentials("edge", "edge-metrics")
    pki = cluster2.pki_dir
    (tmp_path / "task.json").write_text(task.to_json())
    metrics_port = free_port()
    (tmp_path / "edge.toml").write_text(f"""
node_id = "cabinet-m"
metrics_listen = "127.0.0.1:{metrics_port}"

[mqtt]
host = "{mosquitto_broker.host}"
port = {mosquitto_broker.port}

[outbox]
dir = "state"
tick_seconds = 0.05

[upload]
leader = "{cluster2.endpoints[0]}"
ca_file = "{pki / 'ca.crt'}"
cert_file = "{pki / 'edge-metrics.crt'}"
key_file = "{pki / 'edge-metrics.key'}"

[[streams]]
name = "counts"
topics = ["city/+/count"]
task = "task.json"
grace_seconds = 0

[streams.measurement]
field = "count"
combine = "sum"
""")
    log_path = tmp_path / "edge.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen([sys.executable, "-m", "twinmpc.services.cli", "edge", "run", "--config", "edge.toml"],
                                 cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: agent.poll() is None and "subscribed to" in log_path.read_text(), "the agent to subscribe")

        async def publish():
            async with aiomqtt.Client(mosquitto_broker.host, mosquitto_broker.port) as client:
                await client.publish("city/s1/count", json.dumps({"ts": int(time.time()), "count": 7}).encode(), qos=1)

        loop_thread.run(publish())
        wait_for(lambda: sample(scrape(metrics_port), "twinmpc_edge_reports_acked_total") == 1, "the report acknowledged")
        text = scrape(metrics_port)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    assert agent.returncode == 0, log_path.read_text()

    for name, help_text in COUNTERS.items():
        assert f"# HELP twinmpc_edge_{name}_total {help_text}" in text
        assert f"# TYPE twinmpc_edge_{name}_total counter" in text
    assert sample(text, "twinmpc_edge_messages_total") == 1
    assert sample(text, "twinmpc_edge_readings_acked_total") == 1
    assert sample(text, "twinmpc_edge_outbox_pending") == 0
    assert "# TYPE twinmpc_edge_stage_seconds histogram" in text
    assert 'twinmpc_edge_stage_seconds_count{stage="upload"} 1.0' in text
    assert 'twinmpc_edge_stage_seconds_count{stage="seal"} 1.0' in text

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    info = [entry["msg"] for entry in lines if entry["level"] == "INFO"]
    assert any(m.startswith("window ") and "report stored in the outbox (1 readings)" in m for m in info), info
    assert any(m.startswith("upload: 1 report(s) acknowledged (1 readings)") for m in info), info
    assert not any("Traceback" in entry.get("exc", "") for entry in lines)
