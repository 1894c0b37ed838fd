"""The guarded prediction API: the twin's congestion forecast for controllers over mTLS gRPC.

Guards, outermost first:

1. mTLS and the role policy (`services.auth.PREDICTION_POLICY`: controllers
   only) in the `AuthInterceptor`, with a per-identity token bucket
   (`services.ratelimit`): RESOURCE_EXHAUSTED beyond ``rate`` per second.
2. Input validation: a request outside the model's domain is INVALID_ARGUMENT.
3. The query monitor (`query_monitor`): a client sweeping the input space is
   flagged, throttled (RESOURCE_EXHAUSTED naming the reason and a
   ``retry-after-ms`` trailer) and audited in the twin's signed log.
4. Coarsened output: a level (low, medium, high), never the score.

`start_prediction_server` returns ``(server, port)`` so tests bind port 0.
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import grpc

from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services import pki
from twinmpc.services.auth import PREDICTION_POLICY, AuthInterceptor, current_principal
from twinmpc.services.ratelimit import RateLimiter, RateSpec
from twinmpc.services.twin.decision_log import DecisionLog
from twinmpc.services.twin.forecast import Forecaster, InvalidForecastRequest, features
from twinmpc.services.twin.query_monitor import QueryMonitor, cell

log = logging.getLogger("twinmpc.twin.prediction")

FORECAST = "/twinmpc.v1.Prediction/Forecast"
_LEVELS = (pb.CONGESTION_LEVEL_LOW, pb.CONGESTION_LEVEL_MEDIUM, pb.CONGESTION_LEVEL_HIGH)


class PredictionServicer(pb_grpc.PredictionServicer):
    """Validate, ask the monitor, answer a level."""

    def __init__(self, forecaster: Forecaster, monitor: QueryMonitor, decisions: DecisionLog) -> None:
        self.forecaster = forecaster
        self.monitor = monitor
        self.decisions = decisions
        self._card = json.dumps(forecaster.card.to_dict(), sort_keys=True)

    async def Forecast(self, request: pb.ForecastRequest, context: grpc.aio.ServicerContext) -> pb.ForecastResponse:
        fields = (request.hour, request.weekend, request.upstream_1, request.upstream_2, request.rain, request.incident)
        try:
            x = features(*fields)
        except InvalidForecastRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        principal = current_principal()
        verdict = self.monitor.observe(principal, cell(*fields))
        if verdict.newly_flagged:
            reason = (f"{verdict.distinct_cells} distinct input cells in {self.monitor.window:g} s "
                      f"(limit {self.monitor.max_cells}): input-space sweep, model extraction pattern")
            self.decisions.record_throttle(identity=principal.identity, reason=reason, queries=verdict.queries,
                                           distinct_cells=verdict.distinct_cells)
            log.warning("prediction client %s flagged and throttled: %s", principal.identity, reason)
        if not verdict.allowed:
            retry_ms = max(1, int(verdict.retry_after_seconds * 1000))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "queries flagged as an input-space sweep (model extraction pattern): throttled",
                                trailing_metadata=(("retry-after-ms", str(retry_ms)),))
        return pb.ForecastResponse(level=_LEVELS[self.forecaster.level(x)], model_card_json=self._card)


async def start_prediction_server(
    forecaster: Forecaster,
    monitor: QueryMonitor,
    decisions: DecisionLog,
    pki_dir: Path,
    *,
    identity: str = "twin-api",
    listen: str = "127.0.0.1:0",
    rate: Fraction = Fraction(20),
    burst: int = 40,
) -> tuple[grpc.aio.Server, int]:
    """Serve `Prediction` over mTLS with the controller-only policy and per-identity rate limit."""
    if not (pki_dir / f"{identity}.crt").exists():
        # The PKI grants the TLS-server purpose to the aggregator role only; this identity is named as
        # an aggregator of no task, so no peer accepts it as one.
        pki.issue(pki_dir, "aggregator", identity, pki_dir, passphrase_env=None)
    limiter = RateLimiter({"predict": RateSpec(rate, burst)}, {FORECAST: "predict"})
    server = grpc.aio.server(interceptors=[AuthInterceptor(PREDICTION_POLICY, rate_limiter=limiter)])
    pb_grpc.add_PredictionServicer_to_server(PredictionServicer(forecaster, monitor, decisions), server)
    creds = pki.server_credentials(pki_dir / f"{identity}.crt", pki_dir / f"{identity}.key", pki_dir / "ca.crt")
    port = server.add_secure_port(listen, creds)
    await server.start()
    return server, port
