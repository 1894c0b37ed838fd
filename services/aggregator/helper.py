"""The helper side of an aggregation job and of a collection.

Each handler is one transaction (or idempotent), so the leader may retry any
step after a crash of either side: a report id seen in another job is a
replay, a finished job answers its stored outcome again, and a collection
answers the bytes it stored when it released them. The helper trusts the
leader for nothing that matters to privacy: it checks the window is closed, the
batch matches its own, the batch size, the collection index and its own budget,
and adds its own full noise exactly once per collection.
"""

from __future__ import annotations

import json
import logging

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.errors import DecodeError, InvalidReport
from twinmpc.mpc.modes import batch_of, mode_of
from twinmpc.mpc.report import REPORT_ID_SIZE, ReportShare
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.services.aggregator.errors import BatchMismatch, NotThisRole, PeerFailure, WrongPeer
from twinmpc.services.aggregator.release import WindowRelease
from twinmpc.services.aggregator.state import AggregatorState
from twinmpc.services.aggregator.tasks import LoadedTask, TaskRegistry
from twinmpc.services.storage import HelperReportRow, NotFound, PutOutcome, WindowBusy

log = logging.getLogger("twinmpc.aggregator")

# Verify states kept between InitJob and ContinueJob; beyond this the oldest are dropped and, if
# their job does continue, recomputed from the stored sealed shares (bounded memory, same result).
MAX_CACHED_STATES = 200_000

_REFUSED = {PutOutcome.REPLAYED: "replayed report id", PutOutcome.WINDOW_CLOSED: "window already collected or expired"}
REJECTED_BLOB_PREFIX = "helper-job-rejected/"  # + job id hex: the ids a finished job rejected (answers a repeated ContinueJob)


class HelperRole:
    def __init__(self, state: AggregatorState, tasks: TaskRegistry) -> None:
        self.state = state
        self.tasks = tasks
        self.windows = WindowRelease(state)
        self._states: dict[tuple[bytes, bytes], object] = {}  # verify states between init and continue

    def _load(self, task_id: bytes, caller: str | None) -> LoadedTask:
        loaded = self.tasks.load(task_id)
        if loaded.agg_index == 0:
            raise NotThisRole("this aggregator is the task's leader, not a helper")
        leader = loaded.task.aggregators[0].identity
        if leader is not None and caller is not None and caller != leader:
            raise WrongPeer(f"only the task's leader ({leader!r}) may drive its aggregation, not {caller!r}")
        return loaded

    # ------------------------------------------------------------ aggregation ---
    def init_job(self, task_id: bytes, job_id: bytes, shares: list[pb.ReportShare], caller: str | None = None) -> list[pb.VerifierShareResult]:
        """Record the job's report ids (replay check), open own shares, return verifier shares."""
        loaded = self._load(task_id, caller)
        store = self.state.store
        if len(job_id) != 16:
            raise DecodeError("job_id must be 16 bytes")
        if store.get_job_state(job_id) == "done":
            raise NotThisRole("aggregation job already finished")
        task = loaded.task
        rows = []
        for s in shares:
            if len(s.report_id) != REPORT_ID_SIZE:
                raise DecodeError("report_id must be 16 bytes")
            rows.append((task.window_start(s.time), HelperReportRow(s.report_id, s.time, s.public_share, s.sealed_share)))
        # past retention this helper may have forgotten a report id: refuse by time, as the leader's upload does
        horizon = task.expired_before(self.state.clock())
        stored = iter(store.put_helper_job(job_id, task_id, [(w, row) for w, row in rows if w >= horizon]))
        outcomes = [next(stored) if w >= horizon else PutOutcome.WINDOW_CLOSED for w, _ in rows]
        return self._verify(loaded, job_id, [row for _, row in rows], outcomes)

    def _verify(self, loaded: LoadedTask, job_id: bytes, rows: list[HelperReportRow], outcomes: list[PutOutcome]) -> list[pb.VerifierShareResult]:
        """HPKE open and one batched verify_init for the stored reports; refusals named per report."""
        fresh_rows = [row for row, o in zip(rows, outcomes, strict=True) if o is PutOutcome.STORED]
        inits = iter(self._open_and_init(loaded, fresh_rows))
        results = []
        for row, o in zip(rows, outcomes, strict=True):  # metrics and logs in report order
            if o is not PutOutcome.STORED:
                self.state.metrics.inc("reports_refused_total", status=o.name)
                results.append(pb.VerifierShareResult(report_id=row.report_id, ok=False, error=_REFUSED[o]))
                continue
            init = next(inits)
            if isinstance(init, InvalidReport):
                log.warning("helper rejects report: %s", init)
                results.append(pb.VerifierShareResult(report_id=row.report_id, ok=False, error=str(init)))
                continue
            state, vshare = init
            self._remember(job_id, row.report_id, state)
            results.append(pb.VerifierShareResult(report_id=row.report_id, ok=True, verifier_share=vshare))
        return results

    def _remember(self, job_id: bytes, report_id: bytes, state: object) -> None:
        if len(self._states) >= MAX_CACHED_STATES:
            del self._states[next(iter(self._states))]  # oldest first (dicts keep insertion order)
        self._states[(job_id, report_id)] = state

    def _open_and_init(self, loaded: LoadedTask, rows: list[HelperReportRow]) -> list[tuple[object, bytes] | InvalidReport]:
        """Per row: open own sealed share, then verify_init for all opened rows at once."""
        task, j = loaded.task, loaded.agg_index
        outcomes: list[tuple[object, bytes] | InvalidReport | None] = [None] * len(rows)
        opened: list[tuple[int, bytes]] = []  # (row index, own input share)
        reports = [ReportShare(row.report_id, row.time, row.public_share, row.sealed_share) for row in rows]  # this helper's view
        for i, share in enumerate(self.state.opener.open_many(task, j, reports)):
            if isinstance(share, InvalidReport):
                outcomes[i] = share
            else:
                opened.append((i, share))
        inits = agg.verify_init_many(
            task, loaded.verify_key, j, [rows[i].report_id for i, _ in opened], [rows[i].public_share for i, _ in opened],
            [share for _, share in opened],
        )
        for (i, _), init in zip(opened, inits, strict=True):
            outcomes[i] = init
        return outcomes  # type: ignore[return-value]

    def continue_job(self, task_id: bytes, job_id: bytes, verdicts: list[pb.ReportVerdict], caller: str | None = None) -> tuple[int, list[bytes]]:
        """Finish verification and accumulate once; a repeated call answers the same outcome."""
        loaded = self._load(task_id, caller)
        store = self.state.store
        job_state = store.get_job_state(job_id)
        if job_state is None:
            if not any(v.accept for v in verdicts):  # nothing to count: a finished job may already be garbage-collected
                return 0, []
            raise NotFound("unknown aggregation job")
        rejected_blob = f"{REJECTED_BLOB_PREFIX}{job_id.hex()}"
        if job_state == "done":
            stored = store.get_blob(rejected_blob) or b""
            rejected = [stored[i : i + 16] for i in range(0, len(stored), 16)]
            return len(verdicts) - len(rejected), rejected
        ids = [v.report_id for v in verdicts]
        if len(set(ids)) != len(ids):
            raise DecodeError("verdicts name a report more than once")  # would count it twice
        rows = {row.report_id: (w, row) for w, row in store.get_helper_job_rows(job_id)}
        task = loaded.task
        # Restarted since init: recompute the missing states from the stored sealed shares, in one batch.
        missing = [
            rows[v.report_id][1] for v in verdicts
            if v.accept and v.report_id in rows and (job_id, v.report_id) not in self._states
        ]
        recomputed = {row.report_id: init for row, init in zip(missing, self._open_and_init(loaded, missing), strict=True)}
        deltas: dict[int, agg.Accumulator] = {}
        rejected = []
        for v in verdicts:
            if not v.accept:
                continue
            entry = rows.get(v.report_id)
            if entry is None:
                raise DecodeError("verdict names a report that is not part of this job")
            window, row = entry
            try:
                st = self._states.pop((job_id, v.report_id), None)
                if st is None:
                    init = recomputed.pop(v.report_id, None) or self._open_and_init(loaded, [row])[0]
                    if isinstance(init, InvalidReport):
                        raise init
                    st = init[0]
                out = agg.verify_finish(task, st, v.verifier_message)
            except InvalidReport:
                rejected.append(v.report_id)
                continue
            deltas.setdefault(window, agg.Accumulator(task)).add([v.report_id], [out])
        store.put_blob(rejected_blob, b"".join(rejected))
        store.finish_helper_job(job_id, task_id, {w: a.encode() for w, a in deltas.items()}, mode_of(task).merge(task))
        accepted = sum(a.count for a in deltas.values())
        self.state.metrics.inc("reports_aggregated_total", accepted)
        return accepted, rejected

    # ------------------------------------------------------------- collection ---
    def aggregate_share(self, req: pb.AggregateShareRequest, actor: str | None = None) -> pb.AggregateShareResponse:
        """Release this helper's noised share of the leader's frozen batch, once per collection."""
        loaded = self._load(req.task_id, actor)
        actor = actor or "leader"
        task, index, window_start = loaded.task, req.collection_index, req.window_start
        if not req.collection_id:
            raise DecodeError("collection_id is required")
        record = self.state.store.get_collection(task.task_id, window_start, index)
        if record is None:
            self.windows.check_collectable(task, window_start, index, actor)
            state_bytes = self.windows.window_state(task, window_start)
            batch = batch_of(task, state_bytes)
            self._check_claim(task, window_start, batch.count, batch.checksum, req, actor)
            self.windows.check_releasable(task, window_start, index, state_bytes, actor)
            try:
                record = self.windows.freeze(task, window_start, index, state_bytes, batch, req.collection_id)
            except WindowBusy:
                raise PeerFailure(f"window {window_start} is still being aggregated; retry the collection") from None
        self._check_claim(task, window_start, record.report_count, record.checksum, req, actor)

        def response(share: bytes, dp_applied: dict) -> bytes:
            return pb.AggregateShareResponse(
                sealed_aggregate_share=share, dp_applied_json=json.dumps(dp_applied, sort_keys=True)
            ).SerializeToString(deterministic=True)

        record = self.windows.release(task, record, loaded.agg_index, actor, response)
        return pb.AggregateShareResponse.FromString(record.response)

    def _check_claim(self, task, window_start: int, count: int, checksum: bytes, req: pb.AggregateShareRequest, actor: str) -> None:
        if count != req.report_count or checksum != req.checksum:
            exc = BatchMismatch(
                f"the leader's batch for window {window_start} differs from this helper's (report count or report set)"
            )
            self.windows.refuse(exc, task, window_start, actor)
            raise exc
