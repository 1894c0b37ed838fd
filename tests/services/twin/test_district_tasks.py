"""One task per district: the noise the aggregators add is sized for what one intersection can change, at the same epsilon."""

from __future__ import annotations

import math

import pytest

from tests.helpers import make_task
from twinmpc.mpc.modes import noise_plan
from twinmpc.services.twin.loop import TwinConfig, task_document


def _plan(doc: dict):
    return noise_plan(make_task(doc["measurement"], vdaf="prio3", dp=doc["dp"]).task)


def test_district_task_noise_is_sized_for_one_intersection() -> None:
    config = TwinConfig()  # 1,000 intersections in 4 districts, 7-bit counts
    doc = task_document(config, 1.0, 2, 250, None)
    assert doc["measurement"] == {"type": "sumvec", "length": 2, "bits": 7} and doc["min_batch_size"] == 125
    assert "district 2" in doc["description"]
    plan = _plan(doc)
    # An intersection changes its district's total by at most (127, 127): L2 sensitivity 127 * sqrt(2), rounded up.
    top = (1 << 7) - 1
    assert float(plan.parameter) * 2 * float(plan.rho) == pytest.approx(math.ceil(top * math.sqrt(2)) ** 2)
    # The same report as one vector over all 4 districts is noised as if it could fill all 8 entries: twice the
    # noise for the same rho (epsilon), which is what one task per district removes.
    whole = _plan({**doc, "measurement": {"type": "sumvec", "length": 2 * config.districts, "bits": 7}})
    assert float(whole.rho) == pytest.approx(float(plan.rho), rel=1e-4)
    assert whole.total_stddev / plan.total_stddev == pytest.approx(2.0, rel=0.01)


def test_district_task_over_mqtt_holds_a_district_sum() -> None:
    config = TwinConfig(intersections=16, districts=2, mqtt="127.0.0.1:1883")
    doc = task_document(config, 4.0, 0, 8, None)
    assert doc["min_batch_size"] == 1 and doc["measurement"]["bits"] == config.report_bits > config.bits
