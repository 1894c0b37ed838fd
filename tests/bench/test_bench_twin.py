"""bench_twin's budget check names every miss (latency, recovery at epsilon 1, incomplete windows)."""

from twinmpc.bench.bench_twin import check


def _row(name, p99=100.0, share=90.0, failed=0):
    return {"controller": name, "close_to_plan_p99_ms": p99, "share_of_oracle_gain_pct": share, "failed_collections": failed}


def test_budgets_met_and_missed() -> None:
    assert check([_row("fixed-time", None, 0.0), _row("ours eps=1"), _row("oracle", 300.0, 100.0)]) == []
    misses = check([_row("ours eps=0.5", 400.0, 10.0), _row("ours eps=1", 90.0, 60.0, failed=1)])
    assert len(misses) == 3 and "400 ms" in misses[0] and "60.0 %" in misses[1] and "not collected" in misses[2]
