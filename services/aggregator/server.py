"""Start an aggregator: mTLS grpc.aio server with auth, health and reflection.

`start_aggregator(config)` returns ``(server, port, core)`` so tests bind
port 0; `serve(config)` runs until SIGTERM/SIGINT and shuts down gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from fractions import Fraction

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.services import pki
from twinmpc.services.aggregator.config import AggregatorConfig
from twinmpc.services.aggregator.core import AggregatorCore
from twinmpc.services.aggregator.metrics_http import start_metrics_server
from twinmpc.services.aggregator.servicers import (
    AggregationServicer,
    CollectionServicer,
    TaskAdminServicer,
    UploadServicer,
    register_servicer,
)
from twinmpc.services.auth import AuthInterceptor
from twinmpc.services.ratelimit import RateLimiter, RateSpec

log = logging.getLogger("twinmpc.aggregator")

ROLE_POLICY: dict[str, set[str]] = {
    "/twinmpc.v1.Upload/UploadReport": {"edge"},
    "/twinmpc.v1.Upload/UploadReports": {"edge"},
    "/twinmpc.v1.Aggregation/InitJob": {"aggregator"},
    "/twinmpc.v1.Aggregation/ContinueJob": {"aggregator"},
    "/twinmpc.v1.Aggregation/GetAggregateShare": {"aggregator"},
    "/twinmpc.v1.Collection/Collect": {"controller"},
    "/twinmpc.v1.TaskAdmin/PutTask": {"admin"},
    "/twinmpc.v1.TaskAdmin/ListTasks": {"admin", "controller"},
    "/twinmpc.v1.TaskAdmin/GetHpkeConfig": {"admin", "edge", "controller", "aggregator"},
}


def _rate_limiter(config: AggregatorConfig) -> RateLimiter:
    lim = config.limits
    return RateLimiter(
        {
            "upload": RateSpec(Fraction(lim.upload_rate_per_second), lim.upload_burst),
            "collect": RateSpec(Fraction(lim.collect_rate_per_second), lim.collect_burst),
        },
        {
            "/twinmpc.v1.Upload/UploadReport": "upload",
            "/twinmpc.v1.Upload/UploadReports": "upload",
            "/twinmpc.v1.Collection/Collect": "collect",
        },
    )


async def start_aggregator(config: AggregatorConfig, *, clock=None) -> tuple[grpc.aio.Server, int, AggregatorCore]:
    """Build and start the server; returns (server, bound port, core)."""
    tls = config.tls
    peer_creds = pki.channel_credentials(tls.cert, tls.key, tls.ca)
    core = AggregatorCore(config, peer_credentials=peer_creds, **({"clock": clock} if clock else {}))
    size = config.limits.max_message_bytes
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(ROLE_POLICY, rate_limiter=_rate_limiter(config))],
        options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
    )
    register_servicer(server, UploadServicer(core), "Upload")
    register_servicer(server, AggregationServicer(core), "Aggregation")
    register_servicer(server, CollectionServicer(core), "Collection")
    register_servicer(server, TaskAdminServicer(core), "TaskAdmin")
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [d.full_name for d in pb.DESCRIPTOR.services_by_name.values()]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_secure_port(config.listen, pki.server_credentials(tls.cert, tls.key, tls.ca))
    if port == 0:
        raise OSError(f"could not bind {config.listen}")
    await server.start()
    core.start()
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if config.metrics_listen:
        host, _, mport = config.metrics_listen.rpartition(":")
        core.metrics_server, core.metrics_port = await start_metrics_server(core.metrics, host, int(mport))
    log.info("aggregator %s listening on port %d", config.identity, port)
    return server, port, core


async def stop_aggregator(server: grpc.aio.Server, core: AggregatorCore, grace: float = 2.0) -> None:
    if core.metrics_server is not None:
        core.metrics_server.close()
    await server.stop(grace)
    await core.stop()


async def serve(config: AggregatorConfig, *, port_file: str | None = None) -> None:
    """Run until SIGINT/SIGTERM; optionally write the bound port to `port_file`."""
    server, port, core = await start_aggregator(config)
    if port_file:
        from pathlib import Path

        tmp = Path(port_file + ".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await stop_aggregator(server, core)
