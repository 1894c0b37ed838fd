"""An aggregator's /metrics as Prometheus scrapes it, and the INFO lines of its events."""

from __future__ import annotations

import logging
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service_utils import collect, past_window, provision, upload
from twinmpc.mpc.client import shard_report
from twinmpc.services.aggregator.metrics import COUNTERS, Metrics


def scrape(port: int) -> tuple[dict, str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def test_scrape_after_upload_and_collection(loop_thread, cluster2, caplog):
    caplog.set_level(logging.INFO, logger="twinmpc.aggregator")
    task = provision(loop_thread, cluster2, {"type": "sum", "bits": 8})
    window = past_window(3)
    upload(loop_thread, cluster2, task, [shard_report(task, v, time=window) for v in (1, 2, 3, 4)])
    assert collect(loop_thread, cluster2, task, window).result == 10
    families, text = scrape(cluster2.nodes[0].core.metrics_port)

    for name in ("reports_uploaded", "reports_aggregated", "collections"):
        family = families[f"twinmpc_{name}"]
        assert family.type == "counter" and family.documentation == COUNTERS[f"{name}_total"]
    assert f"# HELP twinmpc_reports_uploaded_total {COUNTERS['reports_uploaded_total']}" in text
    assert "# TYPE twinmpc_stage_seconds histogram" in text
    uploaded = {s.labels["task"]: s.value for s in families["twinmpc_reports_uploaded"].samples if s.name.endswith("_total")}
    assert uploaded[task.task_id_b64[:8]] == 4

    stages = families["twinmpc_stage_seconds"]
    assert stages.type == "histogram"
    counts = {s.labels["stage"]: s.value for s in stages.samples if s.name.endswith("_count")}
    assert counts["upload"] >= 1 and counts["aggregate_job"] >= 1 and counts["collect"] >= 1
    buckets = [s for s in stages.samples if s.name.endswith("_bucket") and s.labels["stage"] == "collect"]
    assert [float(b.labels["le"]) for b in buckets][-1] == float("inf")
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)  # cumulative
    assert buckets[-1].value == counts["collect"]

    commits = {s.labels["name"]: s.value for s in families["twinmpc_db_transactions"].samples if s.name.endswith("_total")}
    spent = {s.labels["name"]: s.value for s in families["twinmpc_db_transaction_seconds"].samples if s.name.endswith("_total")}
    assert commits["write"] >= 3 and spent["write"] > 0, commits  # the task, the reports, the job at least (SQLite)
    assert "twinmpc_db_transaction_retries_total" in text

    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("upload: 4 report(s) acknowledged") and task.task_id_b64[:8] in m for m in messages), messages
    assert any(m.startswith("job: ") for m in messages), messages
    assert any(m.startswith("collection: 1 window(s) returned") for m in messages), messages


def test_upload_log_lines_are_summarised_per_second():
    """Thousands of one-report uploads a second must not become thousands of log lines."""
    now = [100.0]
    metrics = Metrics(clock=lambda: now[0])
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("twinmpc.aggregator")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for _ in range(50):
            metrics.inc("reports_uploaded_total", 1, task="t")
        now[0] += 1.0
        metrics.inc("reports_uploaded_total", 1, task="t")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert records == ["upload: 1 report(s) acknowledged task=t", "upload: 50 report(s) acknowledged task=t"]
    assert metrics.get("reports_uploaded_total", task="t") == 51


def test_a_counter_keeps_its_labels():
    metrics = Metrics()
    metrics.inc("reports_refused_total", status="STALE")
    with pytest.raises(ValueError, match="status"):
        metrics.inc("reports_refused_total")
