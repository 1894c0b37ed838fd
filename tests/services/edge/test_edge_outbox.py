"""Durable outbox: store before upload, delete after ack, backoff, dead letters, bound, restart.

``InProcessAggregators`` runs the real protocol (open sealed shares, verify,
accumulate, collector unshard) behind the ``Uploader`` protocol, for the tests
that do not need the gRPC services; it also serves tests/test_edge_mqtt.py.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc import collector
from twinmpc.mpc.client import shard_report
from twinmpc.mpc.errors import InvalidReport
from twinmpc.mpc.report import Report
from twinmpc.services.client import UploadOutcome
from twinmpc.services.edge.outbox import (
    NODE_KEY_SIZE,
    Outbox,
    OutboxError,
    OutboxFull,
    OutcomeKind,
    WindowAlreadyReported,
    backoff_delay,
    classify_outcome,
    drain_once,
    report_id_for,
)
from tests.helpers import TaskKit, make_task

T0 = 1_800_000_000


class FakeClock:
    """Settable clock (seconds) for outbox/agent time; asyncio pacing stays real."""

    def __init__(self, now: float = T0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


def Outcome(status: str, message: str = "", report_id: bytes = bytes(16)) -> UploadOutcome:
    """An outcome as services.client.UploadClient returns it."""
    return UploadOutcome(report_id, status == "ACCEPTED", status in ("REPLAYED", "INVALID", "STALE"), status, message)


@dataclass
class InProcessAggregators:
    """K aggregators + collector in one process, with the services' upload semantics.

    ``down``: every upload raises ConnectionRefusedError (network/aggregator down).
    ``lose_acks``: the next N batches are stored but the answer is lost (OSError).
    """

    kits: dict[bytes, TaskKit]
    down: bool = False
    lose_acks: int = 0
    seen: set[bytes] = field(default_factory=set)
    accs: dict[tuple[bytes, int], list[agg.Accumulator]] = field(default_factory=dict)
    uploaded: list[bytes] = field(default_factory=list)
    calls: int = 0

    async def upload_batch(self, task_id: bytes, reports: list[Report]) -> list[Outcome]:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("aggregator down")
        kit = self.kits[task_id]
        out = []
        for r in reports:
            self.uploaded.append(r.encode())
            if r.report_id in self.seen:
                out.append(Outcome("REPLAYED", "report id already uploaded"))
                continue
            try:
                inits = []
                for j, kp in enumerate(kit.agg_keys):
                    share = agg.open_input_share(kit.task, kp, j, r)
                    inits.append(agg.verify_init(kit.task, kit.verify_key, j, r.report_id, r.public_share, share))
                message = agg.verifier_message(kit.task, [v for _, v in inits])
            except InvalidReport as exc:
                out.append(Outcome("INVALID", type(exc).__name__))
                continue
            ws = kit.task.window_start(r.time)
            accs = self.accs.setdefault((task_id, ws), [agg.Accumulator(kit.task) for _ in kit.agg_keys])
            for j, (state, _) in enumerate(inits):
                accs[j].add([r.report_id], [agg.verify_finish(kit.task, state, message)])
            self.seen.add(r.report_id)
            out.append(Outcome("ACCEPTED"))
        if self.lose_acks:
            self.lose_acks -= 1
            raise ConnectionResetError("answer lost")
        return out

    def collect(self, task_id: bytes, ws: int):
        kit = self.kits[task_id]
        accs = self.accs[(task_id, ws)]
        sealed = [agg.seal_aggregate_share(kit.task, ws, j, a, a.agg_share) for j, a in enumerate(accs)]
        return collector.unshard(kit.task, kit.collector_key, ws, accs[0].count, accs[0].checksum, sealed)

    def windows(self, task_id: bytes) -> list[int]:
        return sorted(ws for (t, ws) in self.accs if t == task_id)


@pytest.fixture(scope="module")
def kit() -> TaskKit:
    return make_task({"type": "sum", "bits": 16}, window_seconds=10)


def open_outbox(path, clock=None, max_reports=100) -> Outbox:
    return Outbox(path, max_reports=max_reports, clock=clock or FakeClock())


def window_report(ob: Outbox, kit: TaskKit, ws: int, value: int = 1) -> Report:
    return shard_report(kit.task, value, time=ws, report_id=ob.report_id(kit.task.task_id, ws))


def drain(ob, up, clock, batch_size=64, jitter=lambda: 1.0):
    return asyncio.run(
        drain_once(ob, up, now=clock(), batch_size=batch_size, retry_initial=1.0, retry_max=8.0, jitter=jitter)
    )


# --------------------------------------------------------------------------- identity and files


def test_node_key_file_is_private_and_stable(tmp_path):
    d = tmp_path / "ob"
    ob = open_outbox(d)
    key_file = d / Outbox.KEY_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert len(key_file.read_bytes()) == NODE_KEY_SIZE
    rid = ob.report_id(b"t" * 32, T0)
    ob.close()
    again = open_outbox(d)
    assert again.report_id(b"t" * 32, T0) == rid  # restart: same id for the same window
    assert "redacted" in repr(again) and key_file.read_bytes().hex() not in repr(again)
    again.close()


def test_insecure_or_corrupt_key_file_refused(tmp_path):
    d = tmp_path / "ob"
    open_outbox(d).close()
    os.chmod(d / Outbox.KEY_NAME, 0o644)
    with pytest.raises(OutboxError, match="0600"):
        open_outbox(d)
    os.chmod(d / Outbox.KEY_NAME, 0o600)
    (d / Outbox.KEY_NAME).write_bytes(b"short")
    with pytest.raises(OutboxError, match="32 bytes"):
        open_outbox(d)


def test_report_id_known_answer_and_separation():
    key = bytes(range(32))
    task = bytes(32)
    rid = report_id_for(key, task, 1_800_000_000)
    assert rid.hex() == report_id_for(key, task, 1_800_000_000).hex() and len(rid) == 16
    import hashlib
    import hmac

    msg = b"twinmpc/edge/v1/report-id" + (32).to_bytes(2, "big") + task + (1_800_000_000).to_bytes(8, "big")
    assert rid == hmac.new(key, msg, hashlib.sha256).digest()[:16]
    assert rid != report_id_for(key, task, 1_800_000_010)
    assert rid != report_id_for(key, b"\x01" + task[1:], 1_800_000_000)
    assert rid != report_id_for(bytes(32), task, 1_800_000_000)
    with pytest.raises(ValueError):
        report_id_for(b"short", task, 0)


# --------------------------------------------------------------------------- store / ledger / bound


def test_put_stores_before_upload_and_refuses_a_second_report_for_the_window(tmp_path, kit):
    clock = FakeClock()
    ob = open_outbox(tmp_path, clock)
    tid = kit.task.task_id
    r = window_report(ob, kit, T0)
    ob.put(tid, T0, r, stream="s", readings=3)
    [e] = ob.entries()
    assert (e.report_id, e.window_start, e.readings, e.attempts) == (r.report_id, T0, 3, 0)
    assert Report.decode(e.payload) == r
    assert ob.window_status(tid, T0) == "pending"
    with pytest.raises(WindowAlreadyReported):
        ob.put(tid, T0, window_report(ob, kit, T0, value=2), stream="s", readings=1)
    with pytest.raises(ValueError, match="not this node's id"):
        ob.put(tid, T0 + 10, window_report(ob, kit, T0), stream="s", readings=1)
    assert ob.pending() == 1


def test_full_outbox_refuses_new_windows_and_keeps_queued_ones(tmp_path, kit):
    clock = FakeClock()
    ob = open_outbox(tmp_path, clock, max_reports=2)
    tid = kit.task.task_id
    for ws in (T0, T0 + 10):
        ob.put(tid, ws, window_report(ob, kit, ws), stream="s", readings=1)
    with pytest.raises(OutboxFull):
        ob.put(tid, T0 + 20, window_report(ob, kit, T0 + 20), stream="s", readings=5)
    assert [e.window_start for e in ob.entries()] == [T0, T0 + 10]  # nothing evicted
    assert ob.window_status(tid, T0 + 20) == "refused"
    with pytest.raises(WindowAlreadyReported):  # a refused window stays refused
        ob.put(tid, T0 + 20, window_report(ob, kit, T0 + 20), stream="s", readings=5)
    up = InProcessAggregators({tid: kit})
    drain(ob, up, clock)
    ob.put(tid, T0 + 30, window_report(ob, kit, T0 + 30), stream="s", readings=1)  # room again
    assert ob.pending() == 1


def test_refuse_and_prune(tmp_path, kit):
    clock = FakeClock()
    ob = open_outbox(tmp_path, clock)
    tid = kit.task.task_id
    ob.refuse(tid, T0, readings=4)
    ob.put(tid, T0 + 10, window_report(ob, kit, T0 + 10), stream="s", readings=1)
    assert ob.prune(T0 + 100) == 1  # the settled (refused) row goes, the pending one stays
    assert [w[1:3] for w in ob.windows()] == [(T0 + 10, "pending")]


# --------------------------------------------------------------------------- drain


def test_drain_acks_and_deletes_only_after_acceptance(tmp_path, kit):
    clock = FakeClock()
    ob = open_outbox(tmp_path, clock)
    tid = kit.task.task_id
    for i, ws in enumerate((T0, T0 + 10, T0 + 20)):
        ob.put(tid, ws, window_report(ob, kit, ws, value=i + 1), stream="s", readings=i + 1)
    up = InProcessAggregators({tid: kit})
    res = drain(ob, up, clock, batch_size=2)
    assert (res.accepted, res.readings_acked) == (2, 3)
    assert ob.pending() == 1
    drain(ob, up, clock)
    assert ob.pending() == 0
    assert [up.collect(tid, ws).result for ws in up.windows(tid)] == [1, 2, 3]
    assert {w[2] for w in ob.windows()} == {"acked"}


def test_transient_failure_backs_off_then_delivers_once(tmp_path, kit):
    clock = FakeClock()
    ob = open_outbox(tmp_path, clock)
    tid = kit.task.task_id
    ob.put(tid, T0, window_report(ob, kit, T0, value=7), stream="s", readings=1)
    up = InProcessAggregators({tid: kit}, down=True)
    res = drain(ob, up, clock, jitter=lambda: 0.0)
    assert res.retried == 1 and ob.pending() == 1
    [e] = ob.entries()
    assert e.attempts == 1 and e.next_attempt_at == clock() + 0.5  # d=1s, equal jitter low end
    assert drain(ob, up, clock).retried == 0  # not due yet: no call
    assert up.calls == 1
    clock.now += 0.5
    drain(ob, up, clock, jitter=lambda: 1.0)
    [e] = ob.entries()
    assert e.attempts == 2 and e.next_attempt_at == clock() + 2.0
    up.down = False
    clock.now += 2
    assert drain(ob, up, clock).accepted == 1
    assert up.collect(tid, T0).result == 7 and up.collect(tid, T0).report_count == 1


def test_lost_ack_resend_is_a_replay_and_counts_once(tmp_path, kit):
    clock = FakeClock()
    ob = open_outbox(tmp_path, clock)
    tid = kit.task.task_id
    ob.put(tid, T0, window_report(ob, kit, T0, value=5), stream="s", readings=2)
    up = InProcessAggregators({tid: kit}, lose_acks=1)
    assert drain(ob, up, clock).retried == 1  # stored by the aggregator, answer lost
    clock.now += 10
    res = drain(ob, up, clock)
    assert (res.accepted, res.replayed, res.readings_acked) == (0, 1, 2)
    assert ob.pending() == 0 and ob.dead_letters() == []
    assert up.collect(tid, T0).report_count == 1 and up.collect(tid, T0).result == 5


def test_permanent_rejection_goes_to_dead_letter(tmp_path, kit):
    clock = FakeClock()
    ob = open_outbox(tmp_path, clock)
    tid = kit.task.task_id
    good = window_report(ob, kit, T0)
    tampered_share = bytearray(good.sealed_shares[1])
    tampered_share[-1] ^= 1
    bad = Report(good.report_id, good.time, good.public_share, (good.sealed_shares[0], bytes(tampered_share)))
    ob.put(tid, T0, bad, stream="s", readings=1)
    up = InProcessAggregators({tid: kit})
    res = drain(ob, up, clock)
    assert res.dead == 1 and ob.pending() == 0
    [(rid, ws, stream, reason)] = ob.dead_letters()
    assert (rid, ws, stream) == (bad.report_id, T0, "s") and reason == "INVALID: SealError"
    assert ob.window_status(tid, T0) == "dead"
    assert drain(ob, up, clock).dead == 0  # never retried


def test_transient_outcome_and_corrupt_row(tmp_path, kit):
    clock = FakeClock()
    ob = open_outbox(tmp_path, clock)
    tid = kit.task.task_id
    ob.put(tid, T0, window_report(ob, kit, T0), stream="s", readings=1)

    class Busy:
        async def upload_batch(self, task_id, reports):
            return [UploadOutcome(bytes(16), False, False, "REPORT_STATUS_UNSPECIFIED", "busy") for _ in reports]

    assert drain(ob, Busy(), clock).retried == 1
    assert ob.entries()[0].attempts == 1
    # A row whose payload no longer decodes (disk corruption) is dead-lettered, not retried forever.
    ob._db.execute("UPDATE outbox SET payload = x'00', next_attempt_at = 0")
    res = drain(ob, InProcessAggregators({tid: kit}), clock)
    assert res.dead == 1 and "corrupt" in ob.dead_letters()[0][3]


def test_uploader_answering_wrong_count_is_an_error(tmp_path, kit):
    clock = FakeClock()
    ob = open_outbox(tmp_path, clock)
    ob.put(kit.task.task_id, T0, window_report(ob, kit, T0), stream="s", readings=1)

    class Short:
        async def upload_batch(self, task_id, reports):
            return []

    with pytest.raises(OutboxError, match="0 outcomes for 1"):
        drain(ob, Short(), clock)
    assert ob.pending() == 1


def test_classify_outcome():
    assert classify_outcome(Outcome("ACCEPTED"))[0] is OutcomeKind.ACCEPTED
    assert classify_outcome(Outcome("REPLAYED", "seen"))[0] is OutcomeKind.REPLAYED
    assert classify_outcome(Outcome("STALE", "window collected")) == (OutcomeKind.REJECTED, "STALE: window collected")
    assert classify_outcome(Outcome("INVALID"))[0] is OutcomeKind.REJECTED
    assert classify_outcome(UploadOutcome(bytes(16), False, False, "X", ""))[0] is OutcomeKind.TRANSIENT
    with pytest.raises(TypeError):
        classify_outcome(("ACCEPTED",))


def test_backoff_known_values():
    assert backoff_delay(1, 0.5, 60, lambda: 0.0) == 0.25
    assert backoff_delay(1, 0.5, 60, lambda: 1.0) == 0.5
    assert backoff_delay(4, 0.5, 60, lambda: 1.0) == 4.0
    assert backoff_delay(30, 0.5, 60, lambda: 1.0) == 60
    assert backoff_delay(10_000, 0.5, 60, lambda: 0.5) == 45
    with pytest.raises(ValueError):
        backoff_delay(0, 0.5, 60, lambda: 0.0)


@given(st.integers(1, 200), st.floats(0.0, 1.0))
def test_backoff_bounds(attempts, u):
    d = backoff_delay(attempts, 0.5, 300.0, lambda: u)
    cap = min(300.0, 0.5 * 2 ** min(attempts - 1, 62))
    assert cap / 2 <= d <= cap


# --------------------------------------------------------------------------- durability


def test_restart_drains_and_nothing_is_sent_twice(tmp_path, kit):
    clock = FakeClock()
    tid = kit.task.task_id
    ob = open_outbox(tmp_path, clock)
    for ws in (T0, T0 + 10):
        ob.put(tid, ws, window_report(ob, kit, ws, value=3), stream="s", readings=1)
    up = InProcessAggregators({tid: kit}, down=True)
    drain(ob, up, clock)
    ob.close()
    again = open_outbox(tmp_path, clock)
    assert again.pending() == 2
    with pytest.raises(WindowAlreadyReported):
        again.put(tid, T0, window_report(again, kit, T0), stream="s", readings=1)
    up.down = False
    clock.now += 100
    assert drain(again, up, clock).accepted == 2
    assert [up.collect(tid, ws).result for ws in up.windows(tid)] == [3, 3]
    assert len(up.seen) == 2


def test_report_survives_a_hard_kill_right_after_put(tmp_path, kit):
    """A process that dies (os._exit, no close) right after put() leaves the report on disk."""
    tid = kit.task.task_id
    code = textwrap.dedent(
        f"""
        import os, sys
        from twinmpc.mpc.report import Report
        from twinmpc.services.edge.outbox import Outbox
        ob = Outbox({str(tmp_path)!r}, max_reports=10)
        rid = ob.report_id(bytes.fromhex({tid.hex()!r}), {T0})
        r = Report(rid, {T0}, b"", (b"a", b"b"))
        ob.put(bytes.fromhex({tid.hex()!r}), {T0}, r, stream="s", readings=9)
        os._exit(9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd(), capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr.decode()
    ob = open_outbox(tmp_path)
    [e] = ob.entries()
    assert e.readings == 9 and e.report_id == ob.report_id(tid, T0)
