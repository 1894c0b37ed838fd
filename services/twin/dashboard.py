"""The operator dashboard: a read-only web page over the running twin (Starlette on uvicorn).

What it shows, refreshed every second from ``GET /api/state``: the latest
per-district results of every private controller with their DP error bars,
the signal plan each controller has in force, the mean delay of every
controller per window, the privacy budget spent per task, whether the twin's
decision log and each aggregator's audit log verify, and each aggregator's
health (gRPC health check plus counters scraped from its /metrics).

Access is behind the controller role: the page and the API need a token
derived from the controller's private key (HKDF-SHA256, bound to the
identity in its certificate, which must carry the controller role), given
once as ``?token=`` and then kept in an HttpOnly, SameSite=Strict cookie.
Whoever holds the controller key can derive it; nobody else can.  Only GET
routes exist: nothing on the page can change the twin.  It binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from twinmpc.crypto.audit_verify import verify_log
from twinmpc.crypto.signing import VerifyKey
from twinmpc.services.pki import Role, principal_from_certificate
from twinmpc.services.twin.decision_log import DecisionLog, verify_decisions
from twinmpc.services.twin.local_cluster import LocalCluster
from twinmpc.services.twin.loop import TwinLoop

COOKIE = "twinmpc_dashboard"
_TOKEN_INFO = b"twinmpc/v1/dashboard-token/"
_PAGE = Path(__file__).with_name("dashboard.html")
_COUNTERS = ("reports_uploaded_total", "reports_aggregated_total", "reports_invalid_total", "collections_total",
             "collections_released_total", "collections_refused_total")


def dashboard_token(cert_pem: bytes, key_pem: bytes) -> str:
    """The access token of a controller credential; refuses a certificate of any other role."""
    principal = principal_from_certificate(cert_pem)
    if principal.role is not Role.CONTROLLER:
        raise ValueError(f"the dashboard is for the controller role; this certificate has role {principal.role.value}")
    key = serialization.load_pem_private_key(key_pem, password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    raw = HKDF(hashes.SHA256(), 32, salt=None, info=_TOKEN_INFO + principal.identity.encode()).derive(der)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def _scrape(endpoint: str) -> dict[str, float]:
    """Counters from a Prometheus text endpoint (summed over labels)."""
    host, _, port = endpoint.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout=2)
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        body = (await asyncio.wait_for(reader.read(), timeout=2)).decode(errors="replace").split("\r\n\r\n", 1)[-1]
    finally:
        writer.close()
    out: dict[str, float] = {}
    for line in body.splitlines():
        name, _, value = line.rpartition(" ")
        base = name.split("{", 1)[0].removeprefix("twinmpc_")
        if base in _COUNTERS:
            out[base] = out.get(base, 0.0) + float(value)
    return out


@dataclass
class DashboardState:
    """Everything the page reads: the loop, the cluster (health, audit logs) and the decision log."""

    loop: TwinLoop
    cluster: LocalCluster
    decisions: DecisionLog
    identity: str = "controller-1"

    def token(self) -> str:
        pki = self.cluster.pki_dir
        self.cluster.credentials("controller", self.identity)
        return dashboard_token((pki / f"{self.identity}.crt").read_bytes(), (pki / f"{self.identity}.key").read_bytes())

    async def health(self) -> list[dict[str, Any]]:
        creds = self.cluster.credentials("controller", self.identity)
        out = []
        metrics = self.cluster.metrics_endpoints
        for i, endpoint in enumerate(self.cluster.endpoints):
            row: dict[str, Any] = {"aggregator": i, "endpoint": endpoint}
            try:
                async with grpc.aio.secure_channel(endpoint, creds) as channel:
                    resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                row["serving"] = resp.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError as exc:
                row["serving"], row["error"] = False, exc.code().name
            if metrics:
                try:
                    row["metrics"] = await _scrape(metrics[i])
                except (OSError, asyncio.TimeoutError, ValueError) as exc:
                    row["metrics_error"] = str(exc) or type(exc).__name__
            out.append(row)
        return out

    def audit(self) -> dict[str, Any]:
        verdict = verify_decisions(self.decisions.path, self.decisions.public_key)
        logs = [{"log": "twin decision log", "ok": verdict.ok, "detail": verdict.describe()}]
        for i, (log, pub) in enumerate(self.cluster.audit_logs()):
            if log.exists() and pub.exists():
                result = verify_log(log, VerifyKey.load(pub))
                logs.append({"log": f"aggregator {i} audit log", "ok": result.ok, "detail": result.describe()})
            else:
                logs.append({"log": f"aggregator {i} audit log", "ok": False, "detail": "not found"})
        return {"ok": all(x["ok"] for x in logs), "logs": logs}

    async def state(self) -> dict[str, Any]:
        audit = await asyncio.to_thread(self.audit)
        return {**self.loop.snapshot(), "audit": audit, "health": await self.health(), "last_error": self.loop.last_error}


def build_app(state: DashboardState) -> Starlette:
    token = state.token()

    def authorised(request: Request) -> bool:
        given = request.cookies.get(COOKIE) or request.headers.get("authorization", "").removeprefix("Bearer ")
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    async def page(request: Request) -> Response:
        offered = request.query_params.get("token")
        if offered is not None:
            if not hmac.compare_digest(offered.encode(), token.encode()):
                return Response("invalid token\n", status_code=401, media_type="text/plain")
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        if not authorised(request):
            return Response("controller token required (open the URL printed by `twinmpc twin run --dashboard`)\n",
                            status_code=401, media_type="text/plain")
        return HTMLResponse(_PAGE.read_text(), headers={"Cache-Control": "no-store"})

    async def api_state(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"error": "controller token required"}, status_code=401)
        return JSONResponse(await state.state(), headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/", page, methods=["GET"]), Route("/api/state", api_state, methods=["GET"])])


class DashboardServer:
    """uvicorn serving the app inside the running event loop."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task, port: int, token: str) -> None:
        self.server, self.task, self.port, self.token = server, task, port, token

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    async def serve_until_cancelled(self) -> None:
        await self.task

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.gather(self.task, return_exceptions=True)


async def start_dashboard(state: DashboardState, *, port: int = 0) -> DashboardServer:
    app = build_app(state)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # re-raise why it could not start (e.g. port in use)
            raise RuntimeError("dashboard server stopped before it started")
        await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return DashboardServer(server, task, bound, state.token())
