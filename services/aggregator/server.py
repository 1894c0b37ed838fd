"""Start an aggregator: mTLS grpc.aio server with auth, health and reflection.

`start_aggregator(config)` returns ``(server, port, core)`` so tests bind
port 0; `services.aggregator.workers.serve(config)` runs a whole aggregator
(its worker processes too) until SIGTERM/SIGINT.

The gRPC port is bound exclusively by default: gRPC sets SO_REUSEPORT on its
listeners, so a second, independent aggregator started on an occupied port
would otherwise come up silently and split the traffic between two stores.
Worker processes of ONE aggregator that mean to share its port pass
``reuse_port=True`` (all of them must, as the kernel requires).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from fractions import Fraction

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.services import pki
from twinmpc.services.aggregator.config import AggregatorConfig
from twinmpc.services.aggregator.core import AggregatorCore
from twinmpc.services.aggregator.servicers import (
    AggregationServicer,
    CollectionServicer,
    TaskAdminServicer,
    UploadServicer,
    register_servicer,
)
from twinmpc.services.aggregator.masks_servicer import masks_servicer
from twinmpc.services.auth import MASKS_POLICY, AuthInterceptor
from twinmpc.services.listen import split_listen
from twinmpc.services.metrics_http import start_metrics_server
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
    "/twinmpc.v1.TaskAdmin/AmendTask": {"admin"},
    "/twinmpc.v1.TaskAdmin/ListTasks": {"admin", "controller"},
    "/twinmpc.v1.TaskAdmin/GetHpkeConfig": {"admin", "edge", "controller", "aggregator"},
    "/twinmpc.v1.TaskAdmin/RotateHpkeKey": {"admin"},
    "/twinmpc.v1.TaskAdmin/RetireHpkeKey": {"admin"},
    "/twinmpc.v1.TaskAdmin/ListHpkeKeys": {"admin"},
    **MASKS_POLICY,
}


# Upload limits count reports, not calls: a streamed batch is charged one token per report.
MESSAGE_COST = {"/twinmpc.v1.Upload/UploadReports": lambda batch: len(getattr(batch, "reports", ()))}


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


class ListenError(OSError):
    """The aggregator cannot listen where its config says (occupied port, bad address)."""


def check_port_free(listen: str) -> None:
    """Raise `ListenError` if another process already listens on `listen` ("host:port").

    gRPC only reports a failed bind as "Failed to bind" (and logs C-core lines
    to stderr); probing first gives the operator the reason in one line.
    SO_REUSEADDR as gRPC sets it, so connections in TIME_WAIT after a restart
    do not count as occupied; a live listener does.
    """
    try:
        host, port = split_listen(listen)
    except ValueError as exc:
        raise ListenError(f"listen: {exc}") from None
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"listen = {listen!r}: {exc.strerror}") from None
    for family, kind, proto, _, address in infos:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:
            continue  # no such address family on this host: gRPC cannot bind it either
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ListenError(f"{listen} is already in use (another aggregator or process listens there)") from None
                if exc.errno != errno.EADDRNOTAVAIL:  # e.g. no IPv6 on this host: gRPC skips it too
                    raise ListenError(f"cannot listen on {listen}: {exc.strerror}") from None


async def start_aggregator(
    config: AggregatorConfig, *, clock=None, reuse_port: bool = False, worker: int = 0
) -> tuple[grpc.aio.Server, int, AggregatorCore]:
    """Build and start the server; returns (server, bound port, core).

    `reuse_port` lets several processes of the same aggregator share the port;
    leave it False for a standalone aggregator, so an occupied port is refused.
    `worker` is this process's index among the aggregator's worker processes.
    """
    if not reuse_port:
        check_port_free(config.listen)
    tls = config.tls
    peer_creds = pki.channel_credentials(tls.cert, tls.key, tls.ca)
    server_creds = pki.server_credentials(tls.cert, tls.key, tls.ca)
    core = AggregatorCore(config, peer_credentials=peer_creds, worker=worker, **({"clock": clock} if clock else {}))
    size = config.limits.max_message_bytes
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(ROLE_POLICY, rate_limiter=_rate_limiter(config), message_cost=MESSAGE_COST)],
        options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", int(reuse_port)),
        ],
    )
    register_servicer(server, UploadServicer(core), "Upload")
    register_servicer(server, AggregationServicer(core), "Aggregation")
    register_servicer(server, CollectionServicer(core), "Collection")
    register_servicer(server, TaskAdminServicer(core), "TaskAdmin")
    register_servicer(server, masks_servicer(core), "SecureAggregation")
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [d.full_name for d in pb.DESCRIPTOR.services_by_name.values()]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # SERVING once everything below is up
    started = False
    try:
        try:
            port = server.add_secure_port(config.listen, server_creds)
        except RuntimeError:  # gRPC's "Failed to bind": lost a race after the probe, or an unusable address
            port = 0
        if port == 0:
            raise ListenError(f"cannot listen on {config.listen} (address in use or not available)")
        await server.start()
        started = True
        core.start()
        for name in names:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if config.metrics_listen:
            try:
                core.metrics_server = await asyncio.to_thread(start_metrics_server, core.metrics.registry, config.metrics_listen)
                core.metrics_port = core.metrics_server.port
            except OSError as exc:
                raise ListenError(f"metrics_listen {config.metrics_listen}: {exc.strerror or exc}") from None
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        if started:
            await server.stop(None)
        await core.stop()
        raise
    log.info("aggregator %s listening on port %d", config.identity, port)
    return server, port, core


async def stop_aggregator(server: grpc.aio.Server, core: AggregatorCore, grace: float = 2.0) -> None:
    if core.metrics_server is not None:
        await asyncio.to_thread(core.metrics_server.close)
        core.metrics_server = None
    await server.stop(grace)
    await core.stop()
