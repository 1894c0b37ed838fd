"""Plumbing of bench/bench_masks.py on a tiny cohort (ours only; Flower runs only in the benchmark itself)."""

from __future__ import annotations

import ast
import json

from twinmpc.bench import bench_masks
from tests.paths import REPO


def test_quick_run_writes_exact_rows(tmp_path) -> None:
    assert bench_masks.main(["--quick", "--no-flower", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "result.json").read_text())["rows"]
    assert [(r["n"], r["d"], r["dropout"]) for r in rows] == [(12, 1, 0.0), (12, 1, 0.3), (12, 100, 0.0), (12, 100, 0.3)]
    assert all(r["ours"]["exact"] and r["ours_warm"]["exact"] and r["ours"]["rounds"] == 5 for r in rows)
    assert all(r["flower"] == {"skipped": "not run"} for r in rows)
    assert "| 12 | 100 | 30% | 11 / 6 |" in (tmp_path / "result.md").read_text()


def test_goal_check_names_each_miss() -> None:
    ours = {"client_ms": 2.0, "server_ms": 1.0, "bytes_per_client": 130.0, "exact": True}
    flower = {"client_ms": 8.0, "server_ms": 10.0, "bytes_per_client": 100.0, "exact": True, "rounds": 4}
    misses = bench_masks.goals([{"n": 10, "d": 1, "dropout": 0.3, "ours": ours, "ours_warm": ours, "flower": flower}])
    assert misses == ["n=10 d=1 dropout=30%: client only 4.0x cheaper (second window)", "n=10 d=1 dropout=30%: 1.30x Flower's bytes"]


def test_flower_driver_imports_nothing_of_ours() -> None:
    """It runs in flwr's own virtualenv, where twinmpc (and its protobuf) is not installed."""
    tree = ast.parse((REPO / "bench" / "flower_secaggplus.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.startswith("twinmpc") for m in modules if m)
    assert "flwr.server.workflow" in modules and "flwr.client.mod" in modules
