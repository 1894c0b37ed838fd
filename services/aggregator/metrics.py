"""Aggregator metrics in Prometheus form (prometheus-client), and the INFO log of its events.

Callers count events with ``inc(name, n=1, **labels)`` and time stages with
``observe(stage, seconds)``; nothing else of the library leaks to them.
Counters carry HELP text from `COUNTERS` and are exposed as
``twinmpc_<name>``; stages feed one histogram, ``twinmpc_stage_seconds``
(label ``stage``), whose buckets span the stage budgets (docs/bench.md), so a
scraper computes quantiles over the window it chooses (``histogram_quantile``
over a ``rate``) instead of a lifetime-wide figure.

The operator-visible events (reports acknowledged at upload, an aggregation
job counted, a collection answered) are logged at INFO here, where they are
counted, so every call site logs them the same way.  Upload lines are
summarised (at most one per second per label set, with the count since the
previous line): an upload RPC per edge node must not turn into a log line per
node.  Nothing secret is ever a label or in a line: only counts, statuses and
task id prefixes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from twinmpc.services.storage import TxStats

log = logging.getLogger("twinmpc.aggregator")

PREFIX = "twinmpc_"

#: HELP text per counter name (a name not listed still works, with a generic HELP line).
COUNTERS: dict[str, str] = {
    "reports_uploaded_total": "Reports the leader stored durably and acknowledged to edge nodes.",
    "reports_refused_total": "Reports refused at upload (replayed, stale, invalid), by status.",
    "reports_aggregated_total": "Reports an aggregation job counted into window accumulators (leader and helpers).",
    "reports_invalid_total": "Reports the aggregators' joint validity check rejected.",
    "collections_total": "Collections the leader answered: every aggregator's share sealed to the collector.",
    "collections_released_total": "Windows this aggregator released: its noised aggregate share, charged to the privacy ledger.",
    "collections_refused_total": "Collections this aggregator refused (window open, batch too small, budget spent ...), by reason.",
}

#: Histogram buckets in seconds: from sub-millisecond uploads to a 30 s peer timeout.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_SUMMARISED = {"reports_uploaded_total": "upload: %d report(s) acknowledged%s"}
_LOGGED = {
    "reports_aggregated_total": "job: %d report(s) counted into window accumulators%s",
    "collections_total": "collection: %d window(s) returned to the collector%s",
}
_SUMMARY_SECONDS = 1.0


class Metrics:
    """One aggregator's metrics, in a registry of its own (several aggregators may share a process)."""

    def __init__(self, *, clock=time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, tuple[Counter, tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        self._stages = Histogram(
            PREFIX + "stage_seconds",
            "Time per stage: upload RPC, aggregation job, collection (seconds).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self._clock = clock
        self._pending: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, float]] = {}  # -> (count, last line)

    def _counter(self, name: str, labelnames: tuple[str, ...]) -> Counter:
        with self._lock:
            hit = self._counters.get(name)
            if hit is None:
                help_text = COUNTERS.get(name, f"twinmpc event count: {name.removesuffix('_total').replace('_', ' ')}.")
                hit = (Counter(PREFIX + name, help_text, labelnames, registry=self.registry), labelnames)
                self._counters[name] = hit
        counter, expected = hit
        if labelnames != expected:
            raise ValueError(f"metric {name} is labelled by {list(expected)}, got {list(labelnames)}")
        return counter

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Count `amount` events of `name` (a Prometheus counter, so never negative)."""
        names = tuple(sorted(labels))
        counter = self._counter(name, names)
        (counter.labels(**labels) if names else counter).inc(amount)
        if amount:
            self._log(name, amount, labels)

    def observe(self, stage: str, seconds: float) -> None:
        """Record how long one `stage` took."""
        self._stages.labels(stage=stage).observe(seconds)

    def get(self, name: str, **labels: str) -> float:
        """Current value of a counter (0 if never incremented)."""
        return self.registry.get_sample_value(PREFIX + name, labels) or 0.0

    def watch_transactions(self, stats: Callable[[], Mapping[str, TxStats]]) -> None:
        """Export the datastore's per-transaction counters, read from `stats` at each scrape:
        commit latency (SQLite's fsync) and serialization retries (PostgreSQL replicas
        contending) are what an operator looks at first when uploads slow down."""
        self.registry.register(_TransactionCollector(stats))

    def render(self) -> bytes:
        """Prometheus text exposition (HELP/TYPE lines, counters, histogram buckets)."""
        return generate_latest(self.registry)

    def _log(self, name: str, amount: float, labels: dict[str, str]) -> None:
        where = "".join(f" {k}={v}" for k, v in sorted(labels.items()))
        if name in _LOGGED:
            log.info(_LOGGED[name], amount, where)
            return
        if name not in _SUMMARISED:
            return
        key = (name, tuple(sorted(labels.items())))
        now = self._clock()
        with self._lock:
            count, last = self._pending.get(key, (0.0, -_SUMMARY_SECONDS))
            count += amount
            due = now - last >= _SUMMARY_SECONDS
            self._pending[key] = (0.0, now) if due else (count, last)
        if due:
            log.info(_SUMMARISED[name], count, where)


class _TransactionCollector:
    """prometheus-client custom collector over a datastore's `transaction_stats`."""

    def __init__(self, stats: Callable[[], Mapping[str, TxStats]]) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []  # read nothing at registration: the store may not be ready to answer yet

    def collect(self) -> Iterator[Metric]:
        commits = CounterMetricFamily(PREFIX + "db_transactions", "Datastore transactions committed, by name.", labels=["name"])
        retries = CounterMetricFamily(PREFIX + "db_transaction_retries", "Datastore transaction attempts retried (serialization failures, deadlocks, lost connections), by name.", labels=["name"])
        seconds = CounterMetricFamily(PREFIX + "db_transaction_seconds", "Time in committed datastore transactions, by name (seconds).", labels=["name"])
        for name, tx in sorted(self._stats().items()):
            commits.add_metric([name], tx.commits)
            retries.add_metric([name], tx.retries)
            seconds.add_metric([name], tx.seconds)
        yield from (commits, retries, seconds)
