"""What every part of an aggregator shares: the task as this aggregator holds it, and its errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.errors import TwinMpcError
from twinmpc.mpc.task import Task


class NotThisRole(TwinMpcError):
    """The request needs another aggregator role for this task (leader vs helper)."""


class PeerFailure(TwinMpcError):
    """A peer aggregator could not complete its step; the job will be retried."""


class WrongPeer(TwinMpcError):
    """The caller holds an aggregator certificate, but not the one of this task's leader."""


class BatchMismatch(TwinMpcError):
    """Aggregators disagree on which reports a window holds."""


@dataclass(frozen=True)
class LoadedTask:
    """A task with this aggregator's position in it and the task's verify key."""

    task: Task
    agg_index: int
    verify_key: bytes

    def __repr__(self) -> str:
        return f"LoadedTask({self.task.task_id_b64}, agg_index={self.agg_index})"


def merge_accumulators(task: Task) -> Callable[[bytes | None, bytes], bytes]:
    """The storage merge callback for a task's window accumulators (shares mode)."""

    def merge(old: bytes | None, delta: bytes) -> bytes:
        if old is None:
            return delta
        acc = agg.Accumulator.decode(task, old)
        acc.merge(agg.Accumulator.decode(task, delta))
        return acc.encode()

    return merge
