"""Backpressure at the leader's door: refuse uploads while aggregation is behind, and say when to return.

The leader acknowledges a report once it is durable, long before it is
aggregated; if edge nodes upload faster than the job driver aggregates, the
backlog grows and a window's close -> result time with it. `Admission` keeps
two cached numbers, refreshed every `REFRESH_SECONDS` on a worker thread:

* the backlog: reports stored but not yet aggregated (one COUNT over the
  store's index of pending reports; with replicas, the backlog of the whole
  database);
* the aggregation rate: reports/s counted by this process's job driver
  (``reports_aggregated_total``) over the last `RATE_WINDOW_SECONDS` in which
  there was a backlog to work on (idle time says nothing about the rate).

An upload only reads them (no query on the hot path). The leader is overloaded
while the backlog exceeds ``max_pending_reports`` or, when the operator sets
``max_backlog_seconds``, the time the measured rate needs to clear it exceeds
that (off by default: a job stuck on one task would make the rate look low). A stalled driver (a helper
outage: rate 0) is bounded by the count alone, so the leader goes on storing
reports durably while the helper is away, up to ``max_pending_reports``. It
admits again once both are back under `RESUME_FRACTION` of their bounds (hysteresis, so clients are not
let in and out at every refresh). A refused upload gets RESOURCE_EXHAUSTED with
a ``retry-after-ms`` trailer (`Overloaded` is a `RateLimited`, mapped in
`services.aggregator.servicers`): the time the measured rate needs to bring the
backlog down to the resume level. Nothing refused was acknowledged, so nothing
is lost: the edge outbox keeps the reports and returns after that time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from twinmpc.services.aggregator.config import Limits
from twinmpc.services.aggregator.metrics import Metrics
from twinmpc.services.ratelimit import RateLimited
from twinmpc.services.storage import Datastore
from twinmpc.services.aggregator.periodic import Periodic

log = logging.getLogger("twinmpc.aggregator")

REFRESH_SECONDS = 0.25
RESUME_FRACTION = 0.8
RATE_WINDOW_SECONDS = 5.0  # busy time the rate is measured over
MIN_MEASURED_SECONDS = 1.0  # less busy time than this: the rate is not known yet
MIN_RETRY_MS, MAX_RETRY_MS = 100, 30_000
UNMEASURED_RETRY_MS = 1_000  # before the driver has finished any job under load


class Overloaded(RateLimited):
    """The leader's aggregation backlog is over its bound; retry after `retry_after_ns`."""

    def __init__(self, retry_after_ms: int, reason: str) -> None:
        super().__init__("upload-backlog", retry_after_ms * 1_000_000, reason)


class Admission:
    def __init__(self, store: Datastore, metrics: Metrics, limits: Limits) -> None:
        self.store = store
        self.metrics = metrics
        self.max_pending = limits.max_pending_reports
        self.max_seconds = limits.max_backlog_seconds or float("inf")
        self.backlog = 0
        self.rate = 0.0  # reports aggregated per second, 0 until measured
        self.overloaded = False
        self._busy: deque[tuple[float, float]] = deque()  # (seconds, reports aggregated) of recent busy intervals
        self._last: tuple[float, float] | None = None  # (monotonic time, aggregated counter) at the last refresh
        self._periodic = Periodic("upload-admission", REFRESH_SECONDS, self.refresh)

    def check(self, incoming: int) -> None:
        """Raise `Overloaded` (with its retry-after) if the leader should not take `incoming` reports now."""
        if self.overloaded:
            self.metrics.inc("uploads_throttled_total", incoming)
            raise Overloaded(self.retry_after_ms(), f"the leader is behind: {self.backlog} reports await aggregation; retry after {self.retry_after_ms()} ms")

    def retry_after_ms(self) -> int:
        """How long the measured rate needs to bring the backlog down to where uploads resume."""
        if self.rate <= 0:
            return UNMEASURED_RETRY_MS
        target = RESUME_FRACTION * min(self.max_pending, self.max_seconds * self.rate)
        return int(min(MAX_RETRY_MS, max(MIN_RETRY_MS, 1000 * (self.backlog - target) / self.rate)))

    def update(self, backlog: int, aggregated_total: float, now: float) -> None:
        """Take one refresh: the current backlog and the driver's aggregated-reports counter at `now`."""
        if self._last is not None:
            then, before = self._last
            done = aggregated_total - before
            if now > then and (done > 0 or self.backlog > 0):  # idle intervals say nothing about the rate
                self._busy.append((now - then, done))
                while sum(dt for dt, _ in self._busy) - self._busy[0][0] >= RATE_WINDOW_SECONDS:
                    self._busy.popleft()
                busy = sum(dt for dt, _ in self._busy)
                if busy >= MIN_MEASURED_SECONDS:
                    self.rate = sum(n for _, n in self._busy) / busy
        self._last = (now, aggregated_total)
        self.backlog = backlog
        lag = backlog / self.rate if self.rate > 0 else 0.0
        if not self.overloaded and (backlog > self.max_pending or lag > self.max_seconds):
            self.overloaded = True
            log.warning("backpressure on: %d reports await aggregation (%.0f reports/s aggregated)", backlog, self.rate)
        elif self.overloaded and backlog <= RESUME_FRACTION * self.max_pending and lag <= RESUME_FRACTION * self.max_seconds:
            self.overloaded = False
            log.info("backpressure off: %d reports await aggregation", backlog)

    async def refresh(self) -> None:
        backlog = await asyncio.to_thread(self.store.count_unaggregated)
        self.update(backlog, self.metrics.get("reports_aggregated_total"), time.monotonic())

    def start(self) -> None:
        self._periodic.start()  # a failed refresh keeps the last numbers

    async def stop(self) -> None:
        await self._periodic.stop()
