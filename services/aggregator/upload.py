"""The leader's upload role: check each report, open the leader's share, store it durably.

An upload is acknowledged only after its group commit (`group_commit`) is durable,
and report ids are de-duplicated there, so an acknowledged report is never lost and
never stored twice. A report whose window is already frozen for a collection is
refused as stale (it could no longer be counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from twinmpc.mpc.errors import DecodeError, InvalidReport, ReplayedReport, StaleReport
from twinmpc.mpc.modes import mode_of
from twinmpc.mpc.report import REPORT_ID_SIZE, Report, ReportShare
from twinmpc.mpc.task import Task
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.services.aggregator.backpressure import Admission
from twinmpc.services.aggregator.errors import NotThisRole
from twinmpc.services.aggregator.group_commit import GroupCommitter
from twinmpc.services.aggregator.share_opener import INLINE_BELOW
from twinmpc.services.aggregator.state import AggregatorState
from twinmpc.services.aggregator.tasks import TaskRegistry
from twinmpc.services.storage import PendingReport, PutOutcome

log = logging.getLogger("twinmpc.aggregator")

_STATUS_BY_ERROR = (
    (ReplayedReport, pb.REPLAYED),
    (StaleReport, pb.STALE),
    (InvalidReport, pb.INVALID),
)
_REFUSAL_FOR_OUTCOME = {
    PutOutcome.REPLAYED: ReplayedReport("report id already uploaded"),
    PutOutcome.WINDOW_CLOSED: StaleReport("window already collected"),
}


def outcome(report_id: bytes, exc: InvalidReport) -> pb.ReportOutcome:
    status = next(code for cls, code in _STATUS_BY_ERROR if isinstance(exc, cls))
    return pb.ReportOutcome(report_id=report_id, status=status, message=str(exc))


class UploadListener(Protocol):
    """What the leader's job driver learns from uploads: when calls run, and how many reports they stored."""

    def upload_started(self) -> None: ...
    def upload_ended(self, stored: int) -> None: ...


class UploadRole:
    def __init__(self, state: AggregatorState, tasks: TaskRegistry, listener: UploadListener,
                 admission: Admission | None = None) -> None:
        self.state = state
        self.tasks = tasks
        self._listener = listener  # the leader's job driver: wakes on stored reports, yields to running calls
        self._admission = admission  # refuses uploads while aggregation is behind (services.aggregator.backpressure)
        self.committer = GroupCommitter(state.store, max_delay=state.config.limits.commit_delay_ms / 1000)

    async def ingest(self, task_id: bytes, reports: list[pb.Report]) -> list[pb.ReportOutcome]:
        """Validate, open own share, store durably; one outcome per report, in order."""
        self._listener.upload_started()
        outcomes: list[pb.ReportOutcome] = []
        accepted = 0
        try:
            outcomes, accepted = await self._ingest(task_id, reports)
        finally:
            self._listener.upload_ended(accepted)
        return outcomes

    async def _ingest(self, task_id: bytes, reports: list[pb.Report]) -> tuple[list[pb.ReportOutcome], int]:
        """The outcomes, and how many reports were stored."""
        started = time.perf_counter()
        loaded = self.tasks.load(task_id)
        if loaded.agg_index != 0:
            raise NotThisRole("uploads go to the task's leader (aggregator 0)")
        if self._admission is not None:
            self._admission.check(len(reports))
        task = loaded.task
        now = self.state.clock()
        outcomes: list[pb.ReportOutcome | None] = []
        rows: list[tuple[int, PendingReport]] = []
        positions: list[int] = []
        seen: set[bytes] = set()
        if len(reports) < INLINE_BELOW:
            checked = self._check_all(task, reports, now)
        else:  # HPKE opens of a large batch run on every core, off the event loop
            checked = await asyncio.to_thread(self._check_all, task, reports, now)
        for msg, row in zip(reports, checked, strict=True):
            try:
                if isinstance(row, InvalidReport):
                    raise row
                if row.report_id in seen:
                    raise ReplayedReport("report id repeated within the upload")
                seen.add(row.report_id)
            except InvalidReport as exc:
                outcomes.append(outcome(msg.report_id, exc))
                continue
            positions.append(len(outcomes))
            outcomes.append(None)
            rows.append((task.window_start(row.time), row))
        for pos, (_, row), result in zip(positions, rows, await self.committer.put(task_id, rows), strict=True):
            if result is PutOutcome.STORED:
                outcomes[pos] = pb.ReportOutcome(report_id=row.report_id, status=pb.ACCEPTED)
            else:
                outcomes[pos] = outcome(row.report_id, _REFUSAL_FOR_OUTCOME[result])
        accepted = sum(1 for o in outcomes if o is not None and o.status == pb.ACCEPTED)
        metrics = self.state.metrics
        metrics.inc("reports_uploaded_total", accepted, task=task.task_id_b64[:8])
        for o in outcomes:
            if o is not None and o.status != pb.ACCEPTED:
                metrics.inc("reports_refused_total", status=pb.ReportStatus.Name(o.status))
                log.warning("report refused: %s (%s)", pb.ReportStatus.Name(o.status), o.message)
        metrics.observe("upload", time.perf_counter() - started)
        return outcomes, accepted  # type: ignore[return-value]

    def _check_all(self, task: Task, msgs: list[pb.Report], now: float) -> list[PendingReport | InvalidReport]:
        """Check each report's framing and time, then open the leader's shares of all of them in one batch."""
        out: list[PendingReport | InvalidReport | None] = [None] * len(msgs)
        to_open: list[tuple[int, Report]] = []
        for i, msg in enumerate(msgs):
            try:
                item = self._check_framing(task, msg, now)
            except InvalidReport as exc:
                out[i] = exc
                continue
            if isinstance(item, PendingReport):
                out[i] = item
            else:
                to_open.append((i, item))
        if to_open:
            expected = task.scheme.input_share_size(0)
            shares = self.state.opener.open_many(task, 0, [r for _, r in to_open])
            for (i, report), share in zip(to_open, shares, strict=True):
                if isinstance(share, InvalidReport):
                    out[i] = share
                elif len(share) != expected:
                    out[i] = DecodeError(f"leader input share is {len(share)} bytes, expected {expected}")
                else:
                    out[i] = PendingReport(report.report_id, report.time, report.public_share, share, report.sealed_shares[1:])
        return out  # type: ignore[return-value]

    def _check_framing(self, task: Task, msg: pb.Report, now: float) -> PendingReport | Report:
        """Length, time and shape checks (the task's mode checks the shape); a report still to open, or the leader's view."""
        if len(msg.report_id) != REPORT_ID_SIZE:
            raise DecodeError(f"report_id must be {REPORT_ID_SIZE} bytes, got {len(msg.report_id)}")
        if msg.time > now + task.max_skew_seconds:
            raise StaleReport(f"report time {msg.time} is more than {task.max_skew_seconds}s ahead of the aggregator clock")
        if msg.time < now - task.report_expiry_seconds:
            raise StaleReport(f"report time {msg.time} is older than the task's {task.report_expiry_seconds}s report expiry")
        admitted = mode_of(task).admit(task, Report(msg.report_id, msg.time, msg.public_share, tuple(msg.sealed_shares)))
        if isinstance(admitted, ReportShare):  # the leader's view already (one ciphertext): nothing to open
            return PendingReport(admitted.report_id, admitted.time, admitted.public_share, admitted.sealed_share, ())
        return admitted
