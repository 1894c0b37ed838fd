"""The edge agent's metrics in Prometheus form.

The agent counts into plain attributes (:class:`~services.edge.agent.EdgeMetrics`,
cheap on the per-message path and read directly by tests); this module exposes
them at scrape time with HELP text, as ``twinmpc_edge_<name>``, next to
histograms of the agent's own stages (``twinmpc_edge_stage_seconds``): sealing a
window's report and one upload round trip to the leader.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "twinmpc_edge_"

#: Counter attributes of EdgeMetrics and what they count.
COUNTERS: dict[str, str] = {
    "messages": "MQTT messages received.",
    "readings_accepted": "Readings that passed the stream's rules into an open window.",
    "late_readings": "Readings for a window already closed (refused, or lost to a restart).",
    "windows_reported": "Windows closed into a report stored in the outbox.",
    "readings_reported": "Readings summarised by the reports stored in the outbox.",
    "windows_empty": "Windows closed with nothing to report.",
    "windows_refused": "Windows refused because the outbox was full (readings not reported).",
    "readings_refused": "Readings in windows refused because the outbox was full.",
    "windows_clamped": "Window values clamped into the task's measurement range.",
    "suppressed_zones": "Zones suppressed by suppress_below_k (too few contributors).",
    "suppressed_readings": "Readings in suppressed zones.",
    "reports_acked": "Reports the leader acknowledged (stored durably there).",
    "reports_replayed": "Reports the leader already held (an acknowledgement lost earlier): delivered.",
    "readings_acked": "Readings summarised by acknowledged reports.",
    "dead_letters": "Reports rejected permanently by the leader (kept in the dead-letter table).",
    "upload_retries": "Reports whose upload failed transiently and will be retried.",
}
GAUGES: dict[str, str] = {
    "outbox_pending": "Reports stored in the outbox, not yet acknowledged.",
    "outbox_full": "1 while the outbox is full and new windows are refused (an alarm).",
}

#: Seconds: sealing is milliseconds, an upload round trip up to the client timeout.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _CountersCollector(Collector):
    """Reads the agent's counters at scrape time (ints written by one thread, read whole by another)."""

    def __init__(self, counters: Any) -> None:
        self._counters = counters

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        m = self._counters
        for name, help_text in COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, help_text, value=getattr(m, name))
        rejected = CounterMetricFamily(PREFIX + "rejected", "Messages rejected by reason (bad JSON, a rule, late ...).",
                                       labels=["reason"])
        for reason, count in sorted(dict(m.rejected).items()):
            rejected.add_metric([reason], count)
        yield rejected
        for name, help_text in GAUGES.items():
            yield GaugeMetricFamily(PREFIX + name, help_text, value=int(getattr(m, name)))


class EdgePrometheus:
    """One agent's registry: its counters plus the stage histograms."""

    def __init__(self, counters: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_CountersCollector(counters))
        self._stages = Histogram(PREFIX + "stage_seconds", "Time per edge stage: seal (window -> sealed report), upload (one round trip).",
                                 ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)

    def observe(self, stage: str, seconds: float) -> None:
        self._stages.labels(stage=stage).observe(seconds)
