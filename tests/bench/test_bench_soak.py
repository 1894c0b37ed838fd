"""The soak benchmark runs end to end on a tiny scale: exact results, stores flat after the horizon."""

from __future__ import annotations

import json

from twinmpc.bench import bench_soak


def test_soak_small_run_is_exact_and_flat(tmp_path):
    out = tmp_path / "soak.json"
    assert bench_soak.main(["--days", "3", "--windows-per-day", "4", "--reports", "20", "--retention-days", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["wrong_results"] == 0 and result["flat_after_horizon"] is True
    reports = [day["leader"]["reports"] for day in result["per_day"]]
    assert reports[1] == reports[2] == 4 * 20  # one day of windows kept: the retention horizon
