"""ShareOpener: batches opened in real worker processes agree with the inline path, byte for byte,
and a worker that dies is replaced without losing or changing any result."""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import pytest

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.client import shard_reports
from twinmpc.mpc.errors import InvalidReport, SealError
from twinmpc.services.aggregator.share_opener import INLINE_BELOW, ShareOpener
from tests.helpers import make_task


@pytest.fixture(scope="module")
def batch():
    kit = make_task({"type": "sum", "bits": 8}, vdaf="prio3")
    reports = shard_reports(kit.task, [i % 256 for i in range(300)], time=1_700_000_000)
    # flip bits rather than overwrite: an overwritten byte equal to the original (1 run in 256) tampered nothing
    sealed5, sealed7 = reports[5].sealed_shares[0], reports[7].sealed_shares[0]
    tampered = dataclasses.replace(reports[5], sealed_shares=(sealed5[:-1] + bytes([sealed5[-1] ^ 1]),) + reports[5].sealed_shares[1:])
    foreign_id = dataclasses.replace(reports[7], sealed_shares=(bytes([sealed7[0] ^ 0x63]) + sealed7[1:],) + reports[7].sealed_shares[1:])
    reports[5], reports[7] = tampered, foreign_id
    return kit, reports


@pytest.fixture(scope="module")
def opener(batch):
    kit, _ = batch
    o = ShareOpener([kit.agg_keys[0]], workers=2)
    yield o
    o.close()


def _expected(kit, reports):
    out = []
    for r in reports:
        try:
            out.append(agg.open_input_share(kit.task, kit.agg_keys[0], 0, r))
        except InvalidReport as exc:
            out.append(type(exc))
    return out


def _shape(results):
    return [type(r) if isinstance(r, InvalidReport) else r for r in results]


def test_worker_processes_agree_with_the_inline_open(batch, opener):
    kit, reports = batch
    assert len(reports) >= INLINE_BELOW
    results = opener.open_many(kit.task, 0, reports)
    assert _shape(results) == _expected(kit, reports)
    assert isinstance(results[5], SealError) and isinstance(results[7], SealError)
    assert "unknown HPKE config id" in str(results[7])


def test_small_batches_are_opened_inline_with_the_same_results(batch, opener):
    kit, reports = batch
    assert _shape(opener.open_many(kit.task, 0, reports[:10])) == _expected(kit, reports[:10])


def test_a_dead_worker_is_replaced_and_the_batch_opened_again(batch, opener):
    kit, reports = batch
    opener.open_many(kit.task, 0, reports)  # the pool is up
    pids = list(opener._executor()._processes)
    os.kill(pids[0], signal.SIGKILL)
    time.sleep(0.2)
    restarts = opener.pool_restarts
    results = opener.open_many(kit.task, 0, reports)
    assert _shape(results) == _expected(kit, reports)  # nothing lost, nothing opened twice into a different answer
    assert opener.pool_restarts == restarts + 1


def test_repr_redacts_keys(batch):
    kit, _ = batch
    o = ShareOpener([kit.agg_keys[0]], workers=1)
    assert "redacted" in repr(o) and kit.agg_keys[0]._raw.hex() not in repr(o)
