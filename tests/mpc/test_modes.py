"""mpc.modes: the one interface every task mode implements, exercised for shares, Paillier and masks.

What services used to decide by comparing ``task.mode`` strings is asked of the
mode object here: hosting checks, the upload shape, aggregation without helpers,
the collector's key and how a collection is opened.
"""

from __future__ import annotations

import os

import pytest

from twinmpc.crypto import paillier
from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc.errors import DecodeError, InvalidReport, InvalidTask
from twinmpc.mpc.modes import HomomorphicMode, MasksMode, SharesMode, mode_of
from twinmpc.mpc.report import Report, ReportShare
from twinmpc.mpc.task import Task, b64encode

AGG_KEYS = [HpkeKeypair.from_private_bytes(j, "x25519-hkdf-sha256-aes128gcm", bytes([j + 1]) * 32) for j in range(2)]
COLLECTOR = HpkeKeypair.from_private_bytes(9, "x25519-hkdf-sha256-aes128gcm", bytes([42]) * 32)
NOW = 1_800_000_000


def _doc(**extra) -> dict:
    return {
        "task_id": b64encode(bytes(range(32))),
        "measurement": {"type": "sum", "bits": 8},
        "aggregators": [{"endpoint": f"127.0.0.1:{7000 + j}", "hpke_config": b64encode(AGG_KEYS[j].config.encode())} for j in range(2)],
        "collector_hpke_config": b64encode(COLLECTOR.config.encode()),
        "window_seconds": 60,
        "min_batch_size": 1,
        **extra,
    }


@pytest.fixture(scope="module")
def paillier_key():
    return paillier.generate_keypair()


@pytest.fixture(scope="module")
def shares_task() -> Task:
    return Task.from_dict(_doc(vdaf="prio3"))


@pytest.fixture(scope="module")
def paillier_task(paillier_key) -> Task:
    public = paillier_key[0].to_json()
    doc = _doc(mode="paillier", he_public_key=b64encode(public if isinstance(public, bytes) else public.encode()), he_max_reports=100)
    doc["aggregators"] = doc["aggregators"][:1]
    return Task.from_dict(doc)


@pytest.fixture(scope="module")
def masks_task() -> Task:
    doc = _doc(mode="masks", measurement={"type": "sumvec", "length": 3, "bits": 8}, min_batch_size=3)
    doc["aggregators"] = [{"endpoint": "127.0.0.1:7000"}]
    return Task.from_dict(doc)


def test_each_mode_name_has_its_object(shares_task, paillier_task, masks_task) -> None:
    assert isinstance(mode_of(shares_task), SharesMode)
    assert isinstance(mode_of(paillier_task), HomomorphicMode) and mode_of(paillier_task).name == "paillier"
    assert isinstance(mode_of(masks_task), MasksMode)
    assert [mode_of(t).verifies_with_helpers for t in (shares_task, paillier_task, masks_task)] == [True, False, False]
    assert [mode_of(t).takes_uploads for t in (shares_task, paillier_task, masks_task)] == [True, True, False]


def test_hosting_checks(shares_task, paillier_task, masks_task) -> None:
    key = os.urandom(shares_task.scheme.VERIFY_KEY_SIZE)
    assert mode_of(shares_task).own_hpke_config(shares_task, 1) == shares_task.aggregators[1].hpke_config
    mode_of(shares_task).check_hosting(shares_task, 1, key)
    with pytest.raises(InvalidTask, match="verify_key must be"):
        mode_of(shares_task).check_hosting(shares_task, 0, b"short")
    assert mode_of(paillier_task).own_hpke_config(paillier_task, 0) is None
    mode_of(paillier_task).check_hosting(paillier_task, 0, b"")
    for task in (paillier_task, masks_task):
        with pytest.raises(InvalidTask, match="runs on one aggregator"):
            mode_of(task).check_hosting(task, 1, b"")


def test_shares_reports_are_admitted_sealed_and_counted_against_the_aggregators(shares_task) -> None:
    mode = mode_of(shares_task)
    [report] = mode.make_reports(shares_task, [7], time=NOW)
    assert mode.admit(shares_task, report) is report  # still sealed: the share opener opens it
    with pytest.raises(DecodeError, match="carries 1 sealed shares, task has 2"):
        mode.admit(shares_task, Report(report.report_id, NOW, report.public_share, report.sealed_shares[:1]))


def test_paillier_report_is_the_leaders_view_and_malformed_ones_are_refused(paillier_task) -> None:
    mode = mode_of(paillier_task)
    [report] = mode.make_reports(paillier_task, [5], time=NOW)
    admitted = mode.admit(paillier_task, report)
    assert admitted == ReportShare(report.report_id, NOW, b"", report.sealed_shares[0])
    with pytest.raises(DecodeError, match="exactly one ciphertext and no public share"):
        mode.admit(paillier_task, Report(report.report_id, NOW, b"x", report.sealed_shares))
    with pytest.raises(DecodeError, match="exactly one ciphertext"):
        mode.admit(paillier_task, Report(report.report_id, NOW, b"", report.sealed_shares * 2))
    with pytest.raises(InvalidReport):
        mode.admit(paillier_task, Report(report.report_id, NOW, b"", (b"\x00" * 5,)))


def test_paillier_aggregates_alone_and_rejects_bad_stored_bytes(paillier_task, paillier_key) -> None:
    mode = mode_of(paillier_task)
    reports = mode.make_reports(paillier_task, [1, 2, 40], time=NOW)
    shares = [ReportShare(r.report_id, r.time, b"", r.sealed_shares[0]) for r in reports]
    shares.append(ReportShare(b"\x01" * 16, NOW, b"", b"garbage"))
    done = mode.aggregate_alone(paillier_task, shares)
    assert done.accepted == [r.report_id for r in reports] and done.rejected == [b"\x01" * 16]
    [(window, state)] = done.deltas.items()
    assert window == paillier_task.window_start(NOW)
    assert mode.batch_of(paillier_task, state).count == 3
    merged = mode.merge(paillier_task)(state, state)
    released = mode.release(paillier_task, window, 0, merged, mode.noise_plan(paillier_task))
    assert mode.open_collection(paillier_task, paillier_key[1], window, 6, b"", [released]) == 86
    with pytest.raises(DecodeError, match="one aggregate, got 2"):
        mode.open_collection(paillier_task, paillier_key[1], window, 6, b"", [released, released])


def test_shares_mode_does_not_aggregate_alone(shares_task) -> None:
    with pytest.raises(InvalidTask, match="does not aggregate uploaded reports alone"):
        mode_of(shares_task).aggregate_alone(shares_task, [])


def test_masks_takes_no_uploads_and_no_reports(masks_task) -> None:
    mode = mode_of(masks_task)
    with pytest.raises(DecodeError, match="takes no uploaded reports"):
        mode.admit(masks_task, Report(os.urandom(16), NOW, b"", (b"x",)))
    with pytest.raises(InvalidTask, match="through rounds"):
        mode.make_reports(masks_task, [[1, 2, 3]], time=NOW)
    assert "masks" in mode.privacy_card(masks_task) and "noise_per_collection" not in mode.privacy_card(masks_task)


def test_shares_mode_names_the_collector_key_and_the_verify_key(shares_task) -> None:
    mode = mode_of(shares_task)
    assert mode.collector_holds_hpke_key and not mode_of(Task.from_dict(_doc(vdaf="twinring64"))).state_in_round_blob
    assert mode.verify_key_size(shares_task) == shares_task.scheme.VERIFY_KEY_SIZE > 0
    assert mode.batch_of(shares_task, None).count == 0
    assert "noise_per_collection" in mode.privacy_card(shares_task)
