"""Spotting a model-extraction sweep among prediction queries, per client identity.

A controller asks about the conditions it sees: the time of day moves slowly,
upstream counts vary within its intersections' range, so over a minute its
queries fall into a handful of cells of the input space.  A client
reconstructing the model must probe many different inputs: its queries keep
landing in cells it has not asked about.  The monitor quantises each query to
a cell (1 h of time of day, 25-vehicle upstream bands, the three flags) and
counts the distinct cells a client touched within the last ``window_seconds``;
at ``max_distinct_cells`` it flags the client, which is then throttled to
``throttled_rate`` queries per second for ``cooldown_seconds`` (through a
`services.ratelimit.RateLimiter` of its own) and audited once per flag.

The clock is injected (seconds) so tests step time by hand.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from twinmpc.services.pki import Principal
from twinmpc.services.ratelimit import RateLimited, RateLimiter, RateSpec

_THROTTLED = "/twinmpc.v1.Prediction/Forecast#throttled"


@dataclass(frozen=True)
class Verdict:
    """What the monitor says about one query: serve it, or refuse (and whether this query raised the flag)."""

    allowed: bool
    newly_flagged: bool = False
    distinct_cells: int = 0
    queries: int = 0
    retry_after_seconds: float = 0.0


def cell(hour: float, weekend: bool, upstream_1: int, upstream_2: int, rain: bool, incident: bool) -> tuple[int, ...]:
    """The coarse input-space cell a query falls into."""
    return (int(hour), int(weekend), upstream_1 // 25, upstream_2 // 25, int(rain), int(incident))


class QueryMonitor:
    """Sliding-window distinct-cell count per identity, flag, throttle."""

    def __init__(
        self,
        *,
        window_seconds: float = 60.0,
        max_distinct_cells: int = 48,
        cooldown_seconds: float = 600.0,
        throttled_rate: Fraction = Fraction(1, 10),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0 or max_distinct_cells < 2 or cooldown_seconds <= 0:
            raise ValueError("window_seconds and cooldown_seconds must be > 0 and max_distinct_cells >= 2")
        self.window = window_seconds
        self.max_cells = max_distinct_cells
        self.cooldown = cooldown_seconds
        self._clock = clock
        self._limiter = RateLimiter({"throttled": RateSpec(throttled_rate, 1)}, {_THROTTLED: "throttled"},
                                    clock=lambda: int(self._clock() * 1e9))
        self._recent: dict[str, deque[tuple[float, tuple[int, ...]]]] = {}
        self._flagged_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def flagged(self, identity: str) -> bool:
        return self._flagged_until.get(identity, float("-inf")) > self._clock()

    def observe(self, principal: Principal, query_cell: tuple[int, ...]) -> Verdict:
        """Record one query and decide whether to serve it."""
        now = self._clock()
        ident = principal.identity
        with self._lock:
            recent = self._recent.setdefault(ident, deque())
            recent.append((now, query_cell))
            while recent and recent[0][0] <= now - self.window:
                recent.popleft()
            distinct = len({c for _, c in recent})
            if not self.flagged(ident):
                if distinct < self.max_cells:
                    return Verdict(True, distinct_cells=distinct, queries=len(recent))
                # The query that completes the sweep pattern is the first one refused.
                self._flagged_until[ident] = now + self.cooldown
                try:
                    self._limiter.acquire(principal, _THROTTLED)
                except RateLimited:
                    pass
                return Verdict(False, True, distinct, len(recent), self.window)
            try:
                self._limiter.acquire(principal, _THROTTLED)
            except RateLimited as exc:
                return Verdict(False, False, distinct, len(recent), exc.retry_after_ns / 1e9)
            return Verdict(True, False, distinct, len(recent))
