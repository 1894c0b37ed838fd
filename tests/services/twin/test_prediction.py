"""The guarded prediction API through a real gRPC server over mTLS: served, rate-limited, sweep throttled and audited."""

from __future__ import annotations

import json
from fractions import Fraction

import grpc
import pytest

from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services import pki
from twinmpc.services.twin.decision_log import DecisionLog, verify_decisions
from twinmpc.services.twin.forecast import train_in_process
from twinmpc.services.twin.prediction import start_prediction_server
from twinmpc.services.twin.query_monitor import QueryMonitor


@pytest.fixture(scope="module")
def forecaster():
    return train_in_process(rounds=10, clients_per_round=8)


@pytest.fixture
def api(request, loop_thread, tmp_path, forecaster):
    rate, burst = getattr(request, "param", (Fraction(1000), 500))
    pki_dir = tmp_path / "pki"
    pki.init_ca(pki_dir, passphrase_env=None)
    for role, ident in (("controller", "controller-1"), ("controller", "controller-x"), ("edge", "edge-1")):
        pki.issue(pki_dir, role, ident, pki_dir, passphrase_env=None)
    log = DecisionLog.open(tmp_path / "twin")
    monitor = QueryMonitor(window_seconds=60, max_distinct_cells=24, cooldown_seconds=600)
    server, port = loop_thread.run(start_prediction_server(forecaster, monitor, log, pki_dir, rate=rate, burst=burst))
    yield pki_dir, port, log
    loop_thread.run(server.stop(None))
    log.close()


def _call(loop_thread, pki_dir, port, ident, requests):
    """Send requests in order on one mTLS channel; returns a status name or a response per request."""

    async def go():
        creds = pki.channel_credentials(pki_dir / f"{ident}.crt", pki_dir / f"{ident}.key", pki_dir / "ca.crt")
        out = []
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            stub = pb_grpc.PredictionStub(channel)
            for req in requests:
                try:
                    out.append(await stub.Forecast(req, timeout=10))
                except grpc.aio.AioRpcError as exc:
                    out.append((exc.code().name, exc.details()))
        return out

    return loop_thread.run(go())


def test_normal_use_is_served_with_levels_only(loop_thread, api, forecaster) -> None:
    pki_dir, port, log = api
    # a controller polling its 8 intersections as the morning goes on: few distinct input cells
    reqs = [pb.ForecastRequest(hour=7.5 + k / 400, upstream_1=100 + 3 * (k % 8), upstream_2=60 + (k % 5)) for k in range(50)]
    reqs.append(pb.ForecastRequest(hour=17.5, upstream_1=380, upstream_2=300, incident=True, rain=True))
    out = _call(loop_thread, pki_dir, port, "controller-1", reqs)
    assert all(isinstance(r, pb.ForecastResponse) for r in out)
    levels = {r.level for r in out}
    assert levels <= {pb.CONGESTION_LEVEL_LOW, pb.CONGESTION_LEVEL_MEDIUM, pb.CONGESTION_LEVEL_HIGH}
    assert out[-1].level == pb.CONGESTION_LEVEL_HIGH and out[0].level != pb.CONGESTION_LEVEL_HIGH
    card = json.loads(out[0].model_card_json)
    assert card["rounds"] == 10 and card["test_accuracy"] == round(forecaster.card.test_accuracy, 4)
    assert verify_decisions(log.path, log.public_key).throttles == 0


def test_extraction_sweep_is_throttled_and_audited_while_others_are_served(loop_thread, api) -> None:
    pki_dir, port, log = api
    sweep = [pb.ForecastRequest(hour=h, upstream_1=u, upstream_2=u // 2) for h in range(0, 24, 2) for u in range(0, 1000, 100)]
    out = _call(loop_thread, pki_dir, port, "controller-x", sweep)
    served = [r for r in out if isinstance(r, pb.ForecastResponse)]
    refused = [r for r in out if not isinstance(r, pb.ForecastResponse)]
    assert len(served) == 23 and len(refused) == len(sweep) - 23
    assert all(code == "RESOURCE_EXHAUSTED" and "model extraction" in msg for code, msg in refused)
    verdict = verify_decisions(log.path, log.public_key)
    assert verdict.ok and verdict.throttles == 1
    entry = json.loads(log.path.read_bytes().splitlines()[-1])
    assert entry["kind"] == "refusal" and entry["fields"]["identity"] == "controller-x"
    # another controller is unaffected
    ok = _call(loop_thread, pki_dir, port, "controller-1", [pb.ForecastRequest(hour=8, upstream_1=120, upstream_2=70)] * 5)
    assert all(isinstance(r, pb.ForecastResponse) for r in ok)


@pytest.mark.parametrize("api", [(Fraction(5), 20)], indirect=True)
def test_wrong_role_bad_input_and_rate_limit(loop_thread, api) -> None:
    pki_dir, port, _ = api
    [edge] = _call(loop_thread, pki_dir, port, "edge-1", [pb.ForecastRequest(hour=8)])
    assert edge[0] == "PERMISSION_DENIED" and "controller" in edge[1]
    bad = _call(loop_thread, pki_dir, port, "controller-1", [pb.ForecastRequest(hour=25), pb.ForecastRequest(hour=8, upstream_1=5000)])
    assert [b[0] for b in bad] == ["INVALID_ARGUMENT"] * 2 and "hour" in bad[0][1] and "upstream_1" in bad[1][1]
    burst = _call(loop_thread, pki_dir, port, "controller-1", [pb.ForecastRequest(hour=8, upstream_1=100)] * 40)
    limited = [r for r in burst if not isinstance(r, pb.ForecastResponse)]
    assert limited and all(r[0] == "RESOURCE_EXHAUSTED" and "rate limit" in r[1] for r in limited)
