"""services.auth on real grpc.aio servers over loopback mTLS (port 0).

A test-only service built from generic handlers with raw-bytes (de)serialisers covers
all four call shapes; no protobuf is involved. Async code runs through `run()`
(plain `asyncio.run`), so pytest-asyncio is not needed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from twinmpc.services import pki
from twinmpc.services.auth import (
    DEFAULT_OPEN_SERVICES,
    AuthInterceptor,
    PrincipalCache,
    Unauthenticated,
    current_principal,
)
from twinmpc.services.pki import Principal, Role
from twinmpc.services.ratelimit import RateLimiter, RateSpec

SERVICE = "twinmpc.test.v1.Probe"
OPEN_SERVICE = "twinmpc.test.v1.Open"


def m(name: str) -> str:
    return f"/{SERVICE}/{name}"


POLICY: dict[str, set[Role | str]] = {
    m("EdgeOnly"): {"edge"},
    m("Watch"): {"controller"},
    m("WatchWrite"): {"controller"},
    m("Ingest"): {"edge", Role.AGGREGATOR},
    m("Echo"): {"aggregator"},
    m("Sync"): {"edge"},
}


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


# --- PKI fixture: one CA, one leaf per role, plus bad material -----------------------


@dataclass(frozen=True)
class Creds:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def channel(self) -> grpc.ChannelCredentials:
        return pki.channel_credentials(self.cert_pem, self.key_pem, self.ca_pem)


@dataclass(frozen=True)
class ProbePki:
    server: pki.IssuedCertificate
    leaves: dict[str, Creds]
    ca_pem: bytes


def _creds(leaf: pki.IssuedCertificate) -> Creds:
    return Creds(leaf.cert_pem, leaf.key_pem, leaf.ca_pem)


def _roleless(ca: pki.CertificateAuthority) -> Creds:
    """Signed by the right CA, valid for TLS, but carrying no role."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no-role")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Creds(cert.public_bytes(serialization.Encoding.PEM), key_pem, ca.cert_pem)


@pytest.fixture(scope="module")
def tpki() -> ProbePki:
    ca = pki.create_ca("auth test CA")
    foreign = pki.create_ca("foreign CA")
    leaves = {
        "edge": _creds(ca.issue("edge", "edge-1")),
        "edge2": _creds(ca.issue("edge", "edge-2")),
        "controller": _creds(ca.issue("controller", "planner-1")),
        "aggregator": _creds(ca.issue("aggregator", "agg-2")),
        "admin": _creds(ca.issue("admin", "ops-1")),
        "no_role": _roleless(ca),
        # Signed by another CA; trusts our CA so only the server side can refuse it.
        "foreign": Creds(*_foreign_pair(foreign), ca.cert_pem),
    }
    return ProbePki(server=ca.issue("aggregator", "agg-1"), leaves=leaves, ca_pem=ca.cert_pem)


def _foreign_pair(ca: pki.CertificateAuthority) -> tuple[bytes, bytes]:
    leaf = ca.issue("edge", "edge-1")  # same identity and role as the genuine edge
    return leaf.cert_pem, leaf.key_pem


# --- test service --------------------------------------------------------------------


@dataclass
class Probe:
    """Handlers of the test service; `invoked` records which bodies actually ran."""

    invoked: list[str] = field(default_factory=list)

    async def edge_only(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.invoked.append("EdgeOnly")
        p = current_principal()
        return f"{p.identity}/{p.role.value}".encode()

    async def watch(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self.invoked.append("Watch")
        yield current_principal().identity.encode()
        yield request

    async def watch_write(self, request: bytes, context: grpc.aio.ServicerContext) -> None:
        self.invoked.append("WatchWrite")
        await context.write(current_principal().identity.encode())
        await context.write(request)

    async def ingest(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        self.invoked.append("Ingest")
        total = 0
        async for r in requests:
            total += len(r)
        return f"{current_principal().identity}:{total}".encode()

    async def echo(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        self.invoked.append("Echo")
        async for r in requests:
            yield r

    def sync(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.invoked.append("Sync")
        return request

    async def unlisted(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.invoked.append("Unlisted")
        return b"should not be reachable"

    async def peek(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return b"leaked:" + current_principal().identity.encode()
        except LookupError:
            return b"none"

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        b = {"request_deserializer": bytes, "response_serializer": bytes}
        probe = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "EdgeOnly": grpc.unary_unary_rpc_method_handler(self.edge_only, **b),
                "Watch": grpc.unary_stream_rpc_method_handler(self.watch, **b),
                "WatchWrite": grpc.unary_stream_rpc_method_handler(self.watch_write, **b),
                "Ingest": grpc.stream_unary_rpc_method_handler(self.ingest, **b),
                "Echo": grpc.stream_stream_rpc_method_handler(self.echo, **b),
                "Sync": grpc.unary_unary_rpc_method_handler(self.sync, **b),
                "Unlisted": grpc.unary_unary_rpc_method_handler(self.unlisted, **b),
            },
        )
        open_ = grpc.method_handlers_generic_handler(
            OPEN_SERVICE, {"Peek": grpc.unary_unary_rpc_method_handler(self.peek, **b)}
        )
        return probe, open_


@dataclass
class Running:
    port: int
    probe: Probe
    target: str


async def serve(
    tp: ProbePki,
    body: Callable[[Running], Awaitable[Any]],
    *,
    limiter: RateLimiter | None = None,
    open_services: frozenset[str] = DEFAULT_OPEN_SERVICES | {OPEN_SERVICE},
    insecure: bool = False,
) -> Any:
    probe = Probe()
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(POLICY, rate_limiter=limiter, open_services=open_services)]
    )
    server.add_generic_rpc_handlers(probe.handlers())
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    if insecure:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", pki.server_credentials(tp.server.cert_pem, tp.server.key_pem, tp.server.ca_pem))
    await server.start()
    try:
        return await body(Running(port, probe, f"localhost:{port}"))
    finally:
        await server.stop(None)


def channel(r: Running, creds: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if creds is None:
        return grpc.aio.insecure_channel(r.target)
    return grpc.aio.secure_channel(r.target, creds)


async def outcome(call: Awaitable[Any]) -> tuple[grpc.StatusCode, Any]:
    """(OK, value) or (code, details): lets one test compare several calls."""
    try:
        return grpc.StatusCode.OK, await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details()


async def unary(ch: grpc.aio.Channel, name: str, payload: bytes = b"x") -> bytes:
    return await ch.unary_unary(m(name))(payload, timeout=10)


async def collect(call: Any) -> list[bytes]:
    return [item async for item in call]


async def requests(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


# --- authentication and authorisation ------------------------------------------------


def test_edge_reaches_edge_only_method(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["edge"].channel()) as ch:
            return await unary(ch, "EdgeOnly"), r.probe.invoked

    assert run(serve(tpki, body)) == (b"edge-1/edge", ["EdgeOnly"])


def test_controller_denied_on_edge_only_method(tpki: ProbePki, caplog: pytest.LogCaptureFixture) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["controller"].channel()) as ch:
            return await outcome(unary(ch, "EdgeOnly")), r.probe.invoked

    with caplog.at_level(logging.WARNING, logger="twinmpc.auth"):
        (code, details), invoked = run(serve(tpki, body))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert details == f"method {m('EdgeOnly')} requires role edge; caller has role controller"
    assert invoked == []
    [record] = [r for r in caplog.records if r.name == "twinmpc.auth"]
    assert record.getMessage().startswith("rpc_refused ")
    fields = json.loads(record.getMessage().removeprefix("rpc_refused "))
    assert fields["code"] == "PERMISSION_DENIED" and fields["identity"] == "planner-1"
    assert fields["role"] == "controller" and fields["method"] == m("EdgeOnly")
    assert "BEGIN" not in caplog.text  # neither certificates nor keys are logged


def test_denial_names_all_allowed_roles(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["controller"].channel()) as ch:
            return await outcome(ch.stream_unary(m("Ingest"))(requests(), timeout=10))

    code, details = run(serve(tpki, body))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "requires one of roles aggregator, edge; caller has role controller" in details


def test_client_without_certificate_fails_handshake(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        creds = grpc.ssl_channel_credentials(root_certificates=tpki.ca_pem)
        async with channel(r, creds) as ch:
            return await outcome(unary(ch, "EdgeOnly")), r.probe.invoked

    (code, _), invoked = run(serve(tpki, body))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert invoked == []


def test_certificate_from_another_ca_refused(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["foreign"].channel()) as ch:
            return await outcome(unary(ch, "EdgeOnly")), r.probe.invoked

    (code, _), invoked = run(serve(tpki, body))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert invoked == []


def test_roleless_certificate_unauthenticated(tpki: ProbePki, caplog: pytest.LogCaptureFixture) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["no_role"].channel()) as ch:
            return await outcome(unary(ch, "EdgeOnly")), r.probe.invoked

    with caplog.at_level(logging.WARNING, logger="twinmpc.auth"):
        (code, details), invoked = run(serve(tpki, body))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "exactly one OU" in details
    assert invoked == []
    assert '"code": "UNAUTHENTICATED"' in caplog.text and '"identity": null' in caplog.text


def test_plaintext_peer_unauthenticated(tpki: ProbePki) -> None:
    """A server mistakenly bound without TLS still refuses every policy method."""

    async def body(r: Running) -> Any:
        async with channel(r, None) as ch:
            return await outcome(unary(ch, "EdgeOnly")), r.probe.invoked

    (code, details), invoked = run(serve(tpki, body, insecure=True))
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "no peer certificate (mTLS required)")
    assert invoked == []


def test_method_missing_from_policy_denied(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["admin"].channel()) as ch:
            return await outcome(unary(ch, "Unlisted")), r.probe.invoked

    (code, details), invoked = run(serve(tpki, body))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "not in the role policy" in details
    assert invoked == []


def test_unknown_method_unimplemented(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["admin"].channel()) as ch:
            return await outcome(unary(ch, "NoSuchMethod"))

    assert run(serve(tpki, body))[0] is grpc.StatusCode.UNIMPLEMENTED


def test_health_open_to_any_certificate_holder(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["no_role"].channel()) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            return reply.status

    assert run(serve(tpki, body)) == health_pb2.HealthCheckResponse.SERVING


def test_health_denied_when_not_allow_listed(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["edge"].channel()) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            return await outcome(stub.Check(health_pb2.HealthCheckRequest(), timeout=10))

    code, details = run(serve(tpki, body, open_services=frozenset()))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "not in the role policy" in details


def test_principal_does_not_leak_into_exempt_methods(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["edge"].channel()) as ch:
            first = await unary(ch, "EdgeOnly")
            peek = await ch.unary_unary(f"/{OPEN_SERVICE}/Peek")(b"", timeout=10)
            return first, peek

    assert run(serve(tpki, body)) == (b"edge-1/edge", b"none")


def test_sync_handler_rejected(tpki: ProbePki) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves["edge"].channel()) as ch:
            return await outcome(unary(ch, "Sync")), r.probe.invoked

    (code, details), invoked = run(serve(tpki, body))
    assert code is grpc.StatusCode.UNKNOWN
    assert invoked == []  # refused before the sync body could run


def test_async_callables_accepted() -> None:
    class Callable_:
        async def __call__(self, request: bytes, context: object) -> bytes:
            return request

    async def fn(request: bytes, context: object) -> bytes:
        return request

    interceptor = AuthInterceptor(POLICY)
    for behavior in (fn, functools.partial(fn), Callable_(), Probe().edge_only):
        handler = grpc.unary_unary_rpc_method_handler(behavior)
        assert interceptor._wrap(handler, m("EdgeOnly")) is not handler


# --- all four call shapes, allowed and refused --------------------------------------


def _shape_call(ch: grpc.aio.Channel, name: str, *, send: bool = True) -> Awaitable[Any]:
    if name in ("Watch", "WatchWrite"):
        return collect(ch.unary_stream(m(name))(b"req", timeout=10))
    if name == "Ingest":
        return ch.stream_unary(m(name))(requests(*(b"ab", b"cde")[: 2 * send]), timeout=10)
    return collect(ch.stream_stream(m(name))(requests(*(b"p", b"q")[: 2 * send]), timeout=10))


@pytest.mark.parametrize(
    ("name", "role", "expected"),
    [
        ("Watch", "controller", [b"planner-1", b"req"]),
        ("WatchWrite", "controller", [b"planner-1", b"req"]),
        ("Ingest", "edge", b"edge-1:5"),
        ("Ingest", "aggregator", b"agg-2:5"),
        ("Echo", "aggregator", [b"p", b"q"]),
    ],
)
def test_streaming_shapes_allowed(tpki: ProbePki, name: str, role: str, expected: Any) -> None:
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves[role].channel()) as ch:
            return await _shape_call(ch, name), r.probe.invoked

    assert run(serve(tpki, body)) == (expected, [name])


@pytest.mark.parametrize(
    ("name", "role"),
    [("Watch", "edge"), ("WatchWrite", "admin"), ("Ingest", "controller"), ("Echo", "edge")],
)
def test_streaming_shapes_denied(tpki: ProbePki, name: str, role: str) -> None:
    # Request streams stay empty: a grpc.aio *client* that is still writing when the
    # server's status arrives may report INTERNAL "Internal error from Core" instead of
    # the server's status (grpc/grpc#36066, fix proposed in grpc/grpc#43486).
    async def body(r: Running) -> Any:
        async with channel(r, tpki.leaves[role].channel()) as ch:
            return await outcome(_shape_call(ch, name, send=False)), r.probe.invoked

    (code, details), invoked = run(serve(tpki, body))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert f"caller has role {Role(role).value}" in details
    assert invoked == []


# --- rate limiting through the interceptor -------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def test_rate_limit_resource_exhausted(tpki: ProbePki, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        {"probe": RateSpec(rate=1, burst=2)}, {m("EdgeOnly"): "probe"}, clock=clock
    )

    async def body(r: Running) -> Any:
        results = []
        async with channel(r, tpki.leaves["edge"].channel()) as ch:
            for _ in range(3):
                results.append((await outcome(unary(ch, "EdgeOnly")))[0])
            call = ch.unary_unary(m("EdgeOnly"))(b"x", timeout=10)
            try:
                await call
            except grpc.aio.AioRpcError as err:
                trailer = dict(err.trailing_metadata() or ())
                results.append((err.code(), err.details(), trailer.get("retry-after-ms")))
        async with channel(r, tpki.leaves["edge2"].channel()) as ch:
            results.append((await outcome(unary(ch, "EdgeOnly")))[0])  # own bucket
        async with channel(r, tpki.leaves["controller"].channel()) as ch:
            # Refused roles are refused before the limiter: no bucket is spent on them.
            results.append((await outcome(unary(ch, "EdgeOnly")))[0])
        clock.ns += 1_000_000_000
        async with channel(r, tpki.leaves["edge"].channel()) as ch:
            results.append((await outcome(unary(ch, "EdgeOnly")))[0])
        return results

    ok, exhausted, denied = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED
    with caplog.at_level(logging.WARNING, logger="twinmpc.auth"):
        results = run(serve(tpki, body, limiter=limiter))
    assert results == [
        ok,
        ok,
        exhausted,
        (exhausted, "rate limit for method class 'probe' exceeded; retry after 1.000 s", "1000"),
        ok,
        denied,
        ok,
    ]
    assert len(limiter) == 2
    assert caplog.text.count('"code": "RESOURCE_EXHAUSTED"') == 2


# --- units: policy validation, principal cache ---------------------------------------


@pytest.mark.parametrize(
    ("policy", "error", "match"),
    [
        ({"EdgeOnly": {"edge"}}, ValueError, "not a '/package.Service/Method'"),
        ({"/svc/": {"edge"}}, ValueError, "not a '/package.Service/Method'"),
        ({m("EdgeOnly"): set()}, ValueError, "allows no role"),
        ({m("EdgeOnly"): {"root"}}, ValueError, "not a valid Role"),
        ({m("EdgeOnly"): "edge"}, TypeError, "collection of roles"),
        ({m("EdgeOnly"): Role.EDGE}, TypeError, "collection of roles"),
    ],
)
def test_policy_validated(policy: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        AuthInterceptor(policy)


def test_principal_cache(tpki: ProbePki) -> None:
    cache = PrincipalCache(maxsize=2)
    edge = tpki.leaves["edge"].cert_pem
    assert cache.principal(edge) == Principal("edge-1", Role.EDGE)
    assert cache.principal(edge) == Principal("edge-1", Role.EDGE)
    assert len(cache) == 1
    cache.principal(tpki.leaves["controller"].cert_pem)
    cache.principal(edge)  # refresh edge: controller is now least recently used
    cache.principal(tpki.leaves["admin"].cert_pem)
    assert len(cache) == 2
    with pytest.raises(Unauthenticated, match="exactly one OU"):
        cache.principal(tpki.leaves["no_role"].cert_pem)
    assert len(cache) == 2
    with pytest.raises(ValueError):
        PrincipalCache(maxsize=0)
