"""README's "Running a deployment by hand", run verbatim with bash in an empty folder.

The block is taken from README.md as it stands, so the README cannot drift
from what works: it starts two aggregator processes in the background, waits
for their health checks, creates a task, uploads one report, collects it once
its 5 s window has closed and stops both aggregators.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

SECTION = "## Running a deployment by hand"


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "no ```bash block in README's hand deployment section"
    return match.group(1)


def ports_in(block: str) -> set[int]:
    return {int(p) for p in re.findall(r"--listen \S+:(\d+)", block)}


def assert_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            pytest.fail(f"port {port}, which README's deployment uses, is taken on this machine: free it to run this test")


def test_readme_block_extracts_what_a_person_types():
    block = readme_block()
    assert block.startswith("twinmpc pki init") and "kill %1 %2" in block
    assert ports_in(block) == {7700, 7701}


def test_readme_hand_deployment_runs_verbatim(tmp_path):
    block = readme_block()
    for port in ports_in(block):
        assert_free(port)
    (tmp_path / "deployment.sh").write_text(block)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = subprocess.Popen(["bash", "-e", "deployment.sh"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)  # a failed block left its aggregators running
            proc.wait()
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("agg*.log")))
    assert proc.returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr}{logs}"

    result = json.loads(stdout.strip().splitlines()[-1])
    assert (result["result"], result["report_count"]) == (17, 1)
    assert "1/1 reports accepted" in stderr
    window = result["window_start"]
    assert window % 5 == 0 and f"window {window}: 1 report(s)" in stderr
    assert stdout.count("SERVING") == 2

    audit = subprocess.run([sys.executable, "-m", "twinmpc.services.cli", "audit", "verify", "agg0-data/audit.log",
                            "--key", "agg0-data/audit_signing.pub"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert audit.returncode == 0, audit.stderr


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
