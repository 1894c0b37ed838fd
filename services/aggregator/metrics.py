"""Counters and latency summaries in Prometheus text format (no extra dependency)."""

from __future__ import annotations

import threading
from collections import defaultdict


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.latencies: dict[str, list[float]] = defaultdict(list)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        with self._lock:
            self.counters[(name, tuple(sorted(labels.items())))] += amount

    def observe(self, stage: str, seconds: float) -> None:
        with self._lock:
            samples = self.latencies[stage]
            samples.append(seconds)
            if len(samples) > 10_000:
                del samples[: len(samples) - 10_000]

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self.counters.get((name, tuple(sorted(labels.items()))), 0)

    def render(self) -> str:
        """Prometheus exposition text (counters + latency quantiles per stage)."""
        lines = []
        with self._lock:
            for (name, labels), value in sorted(self.counters.items()):
                label_text = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"twinmpc_{name}{{{label_text}}} {value:g}")
            for stage, samples in sorted(self.latencies.items()):
                ordered = sorted(samples)
                for q in (0.5, 0.99):
                    value = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0
                    lines.append(f'twinmpc_stage_seconds{{stage="{stage}",quantile="{q}"}} {value:.6f}')
        return "\n".join(lines) + "\n"
