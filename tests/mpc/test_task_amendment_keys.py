"""Amendments that rotate HPKE keys: an aggregator's pinned config, the collector's key."""

from __future__ import annotations

import pytest

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc.client import shard_report
from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.task import Task, b64encode
from twinmpc.mpc.task_amendment import amend
from tests.helpers import make_task

PQ = "mlkem768x25519-hkdf-sha256-aes128gcm"


def _b64(keypair: HpkeKeypair) -> str:
    return b64encode(keypair.config.encode())


def test_an_aggregators_new_config_is_pinned_and_nothing_else_changes():
    kit = make_task({"type": "sum", "bits": 8})
    new = HpkeKeypair.generate(9)
    amended = amend(kit.task, {"aggregator_hpke_config": {"index": 1, "hpke_config": _b64(new)}})
    assert amended.aggregators[1].hpke_config == new.config
    before, after = kit.task.to_dict(), amended.to_dict()
    before["aggregators"][1].pop("hpke_config"), after["aggregators"][1].pop("hpke_config")
    assert before == after
    # a report sealed before the amendment still opens after it: the seal binds the task id, not the document
    report = shard_report(kit.task, 5, time=1_700_000_000)
    assert agg.open_input_share(amended, kit.agg_keys[1], 1, report)
    assert shard_report(amended, 5, time=1_700_000_000).sealed_shares[1][0] == 9  # new reports seal to the new key


def test_the_collector_key_is_replaced():
    kit = make_task({"type": "count"})
    new = HpkeKeypair.generate(3)
    assert amend(kit.task, {"collector_hpke_config": _b64(new)}).collector_hpke_config == new.config


@pytest.mark.parametrize("change, needle", [
    ({"aggregator_hpke_config": {"index": 2, "hpke_config": "AAAA"}}, "0..1"),
    ({"aggregator_hpke_config": {"index": True, "hpke_config": "AAAA"}}, "index"),
    ({"aggregator_hpke_config": {"index": 0}}, '{"index"'),
    ({"aggregator_hpke_config": "AAAA"}, '{"index"'),
    ({"aggregator_hpke_config": {"index": 0, "hpke_config": "AAAA"}}, "aggregators[0].hpke_config"),
    ({"collector_hpke_config": "not base64!"}, "collector_hpke_config"),
])
def test_malformed_key_amendments_are_refused_naming_the_field(change, needle):
    with pytest.raises(InvalidTask) as info:
        amend(make_task({"type": "count"}).task, change)
    assert needle in str(info.value)


def test_a_replacement_keeps_post_quantum_protection():
    kit = make_task({"type": "count"}, suite=PQ)
    classical = HpkeKeypair.generate(5)
    with pytest.raises(InvalidTask, match="non-post-quantum"):
        amend(kit.task, {"aggregator_hpke_config": {"index": 0, "hpke_config": _b64(classical)}})
    with pytest.raises(InvalidTask, match="non-post-quantum"):
        amend(kit.task, {"collector_hpke_config": _b64(classical)})
    upgraded = amend(make_task({"type": "count"}).task, {"collector_hpke_config": _b64(HpkeKeypair.generate(5, PQ))})
    assert upgraded.collector_hpke_config.suite.name == PQ  # moving to post-quantum is allowed


def test_key_amendments_belong_to_the_modes_that_use_those_keys():
    he_task = Task.from_dict({
        "task_id": make_task({"type": "count"}).task.to_dict()["task_id"], "measurement": {"type": "count"},
        "mode": "paillier", "aggregators": [{"endpoint": "localhost:7000"}], "he_public_key": "AAAA",
        "window_seconds": 60, "min_batch_size": 1,
    })
    with pytest.raises(InvalidTask, match="mode 'shares'"):
        amend(he_task, {"aggregator_hpke_config": {"index": 0, "hpke_config": _b64(HpkeKeypair.generate(1))}})
    with pytest.raises(InvalidTask, match="he_public_key"):
        amend(he_task, {"collector_hpke_config": _b64(HpkeKeypair.generate(1))})
