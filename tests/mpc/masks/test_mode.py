"""Masks-mode tasks: parameters, DP calibration to the threshold, and the per-window state."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc.dp import DpParams
from twinmpc.mpc.errors import DecodeError, InvalidTask, SealError
from twinmpc.mpc.masks import mode
from twinmpc.mpc.masks.noise import client_noise, kls21_rho
from twinmpc.mpc.masks.params import MasksParams, threshold
from twinmpc.mpc.task import Task, b64encode
from tests.mpc.masks.rounds import make_round

COLLECTOR = HpkeKeypair.generate(0)


def _task(**extra) -> Task:
    doc = {
        "task_id": b64encode(bytes(range(32))),
        "measurement": {"type": "sumvec", "length": 3, "bits": 8},
        "mode": "masks",
        "aggregators": [{"endpoint": "127.0.0.1:7000"}],
        "collector_hpke_config": b64encode(COLLECTOR.config.encode()),
        "window_seconds": 60,
        "min_batch_size": 3,
        **extra,
    }
    return Task.from_dict(doc)


def test_masks_task_round_trips_with_defaults() -> None:
    task = _task(masks={"dropout": "1/10", "neighbours": 8})
    assert task.masks == MasksParams(dropout=Fraction(1, 10), neighbours=8)
    assert Task.from_json(task.to_json()) == task
    assert _task().masks == MasksParams()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"aggregators": [{"endpoint": "a:1"}, {"endpoint": "b:2"}]}, "exactly one aggregator"),
        ({"collector_hpke_config": None}, "needs 'collector_hpke_config'"),
        ({"masks": {"dropout": 0.5}}, r"masks.dropout must lie in \[0, 1/2\)"),
        ({"masks": {"neighbours": 7}}, "even integer"),
        ({"masks": {"neighbors": 8}}, "unknown key 'neighbors'"),
        ({"masks": {"round_seconds": 0}}, "round_seconds"),
        ({"dp": {"algo": "discrete-laplace", "epsilon": 1}}, "needs dp.algo 'discrete-gaussian'"),
        ({"mode": "shares", "masks": {}}, "need mode 'masks'"),
    ],
)
def test_masks_task_is_validated(extra: dict, message: str) -> None:
    if extra.get("collector_hpke_config", 1) is None:
        doc = _task().to_dict()
        del doc["collector_hpke_config"]
        with pytest.raises(InvalidTask, match=message):
            Task.from_dict(doc)
        return
    with pytest.raises(InvalidTask, match=message):
        _task(**extra)


def test_degree_is_logarithmic_with_an_honest_majority_threshold() -> None:
    p = MasksParams(dropout=Fraction(1, 5))
    assert p.degree(10) == 9 and threshold(9) == 5  # small cohorts: the complete graph
    k1000, k100000 = p.degree(1000), p.degree(100_000)
    assert k1000 < 100 and k100000 < 2 * k1000  # grows like log n
    assert MasksParams(dropout=Fraction(0)).degree(1000) == 2
    assert MasksParams(neighbours=40).degree(1000) == 40 and MasksParams(neighbours=40).degree(10) == 9


def test_client_noise_meets_the_target_at_the_threshold() -> None:
    params = DpParams.from_dict({"algo": "discrete-gaussian", "epsilon": 1, "delta": 1e-9})
    noise = client_noise(params, l2_sensitivity=255, dimension=3, min_clients=70, cohort=100)
    assert kls21_rho(float(noise.sigma2), 70, 255, 3, tau_clients=100) <= float(noise.rho)
    # central-equivalent at exactly the threshold, up to rounding; 1/(1 - dropout) more with no dropout
    assert 1 <= noise.describe()["variance_vs_central"] < 1.01
    assert noise.describe(survivors=100)["variance_vs_central"] == pytest.approx(100 / 70, rel=0.01)
    tiny = client_noise(params, l2_sensitivity=1, dimension=1, min_clients=700, cohort=1000)
    assert tiny.sigma2 >= Fraction(1, 4)  # the distributed bound needs sigma >= 1/2: the cost for counts
    assert tiny.describe()["variance_vs_central"] > 5


def test_window_state_merge_count_and_release() -> None:
    task = _task()
    rnd = make_round(5, d=3, task_id=task.task_id)
    result = rnd.run()
    state = mode.window_state(result)
    assert mode.count(task, state) == 5
    merged = mode.merge(task)(None, state)
    assert mode.merge(task)(merged, state) == merged  # the same round twice counts once
    sealed = mode.release(task, merged)
    window = rnd.config.session.window_start
    assert mode.open_release(task, COLLECTOR, window, 5, sealed) == [int(v) for v in rnd.expected(set(rnd.clients))]
    with pytest.raises(SealError):
        mode.open_release(task, COLLECTOR, window, 4, sealed)  # bound to the count
    with pytest.raises(DecodeError, match="trailing"):
        mode.decode_state(task, state + b"\x00")
    plan = mode.noise_plan(task, state)
    assert plan.distribution == "none"


def test_noise_plan_describes_the_clients_draws() -> None:
    task = _task(dp={"algo": "discrete-gaussian", "epsilon": 1, "delta": 1e-9})
    config = mode.round_config(task, 120)
    noise = config.plan(10).noise
    state = mode.encode_state(mode.WindowState(120, np.zeros(3, dtype=np.uint64), ((0, 8, noise.sigma2),), noise.rho, noise.delta))
    plan = mode.noise_plan(task, state)
    assert plan.rho == noise.rho and plan.num_aggregators == 8
    assert plan.total_variance == pytest.approx(8 * float(noise.sigma2))
    with pytest.raises(InvalidTask, match="not aligned"):
        mode.round_config(task, 121)


def test_card_states_poisoning_dropout_and_accuracy_cost() -> None:
    task = _task(dp={"algo": "discrete-gaussian", "epsilon": 1, "delta": 1e-9}, masks={"dropout": "1/5", "max_clients": 100})
    card = mode.card(task)
    assert "modified code can shift each coordinate" in card["poisoning"] and "prio3" in card["poisoning"]
    assert "2^8 - 1 per entry" in card["poisoning"]
    assert card["dropout_tolerance"].startswith("up to 1/5 of the cohort")
    assert card["example_cohort"]["threshold_t"] == card["example_cohort"]["neighbours_k"] // 2 + 1
    assert "at the floor" in card["noise"]["accuracy_cost"] and card["noise"]["min_clients"] == 80
    with pytest.raises(InvalidTask, match="supports measurements"):
        _task(measurement={"type": "histogram", "buckets": 4})
