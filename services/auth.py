"""Caller authentication and role-based authorisation for grpc.aio servers.

The TLS handshake (mTLS, `services.pki.server_credentials`) proves the caller holds a
key certified by the deployment CA. This module turns that certificate into a
`Principal` (identity, role) and enforces a per-method role policy *before* the
servicer runs, so servicers stay thin (STYLE.md §4):

* no peer certificate, or one without a well-formed role  -> UNAUTHENTICATED
* method not in the policy (deny by default)              -> PERMISSION_DENIED
* caller's role not allowed for the method                -> PERMISSION_DENIED, naming the role(s) required
* caller over its rate limit (optional `RateLimiter`)     -> RESOURCE_EXHAUSTED (+ ``retry-after-ms`` trailer)

Standard health and reflection services are exempt from the role check (they still
sit behind mTLS). Each refusal is logged as one structured line on the
``twinmpc.auth`` logger; certificates and keys never reach the log.

grpc.aio interceptors only see `HandlerCallDetails`, not the servicer context, so the
check runs inside a wrapper around the method handler's behaviour (all four call
shapes). The admitted principal is published in a contextvar for the servicer
(`current_principal()`); each aio RPC runs in its own task, hence its own context.

Errors::

    TwinMpcError (mpc.errors)
    └── AuthError
        └── Unauthenticated     no usable peer certificate
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import json
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from twinmpc.mpc.errors import TwinMpcError
from twinmpc.services.pki import InvalidCertificate, Principal, Role, principal_from_certificate
from twinmpc.services.ratelimit import RateLimited, RateLimiter

__all__ = [
    "DEFAULT_OPEN_SERVICES",
    "PREDICTION_POLICY",
    "AuthError",
    "AuthInterceptor",
    "PrincipalCache",
    "Unauthenticated",
    "current_principal",
    "principal_from_context",
]

#: Services reachable by any mTLS peer regardless of role: health checks must work for
#: load balancers and probes holding any valid certificate, reflection for grpcurl.
DEFAULT_OPEN_SERVICES: frozenset[str] = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
)

#: The twin's guarded prediction API (services/twin/prediction.py): controllers only.
PREDICTION_POLICY: dict[str, frozenset[Role]] = {"/twinmpc.v1.Prediction/Forecast": frozenset({Role.CONTROLLER})}

#: Masks mode's rounds (services/aggregator/masks_servicer.py): edge nodes only.
MASKS_POLICY: dict[str, frozenset[Role]] = {
    f"/twinmpc.v1.SecureAggregation/{m}": frozenset({Role.EDGE})
    for m in ("Advertise", "ShareKeys", "MaskedInput", "ConfirmSurvivors", "Unmask")
}

_METHOD_RE = re.compile(r"/([A-Za-z_][A-Za-z0-9_.]*)/[A-Za-z_][A-Za-z0-9_]*")
_PEM_KEY = "x509_pem_cert"

_principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar("twinmpc_principal")


class AuthError(TwinMpcError):
    """Base class of authentication/authorisation failures."""


class Unauthenticated(AuthError):
    """The peer presented no certificate, or one that names no valid role."""


def current_principal() -> Principal:
    """The caller admitted by `AuthInterceptor` for the RPC being served.

    Raises LookupError outside an RPC that went through the role check (e.g. in
    an exempt health/reflection method): a servicer asking for it there is a bug.
    """
    return _principal_var.get()


class PrincipalCache:
    """Maps a peer certificate to its Principal, parsing each certificate once.

    Keyed by the SHA-256 of the PEM bytes gRPC hands over (a fingerprint of the exact
    certificate: gRPC re-encodes the verified DER deterministically). Bounded LRU.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError("maxsize must be a positive integer")
        self._maxsize = maxsize
        self._entries: OrderedDict[bytes, Principal] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def principal(self, pem: bytes) -> Principal:
        """Return the certificate's Principal; raise `Unauthenticated` if it has none."""
        key = hashlib.sha256(pem).digest()
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit
        try:
            principal = principal_from_certificate(pem)
        except InvalidCertificate as exc:
            raise Unauthenticated(str(exc)) from None
        self._entries[key] = principal
        if len(self._entries) > self._maxsize:
            self._entries.popitem(last=False)
        return principal


def principal_from_context(
    context: grpc.aio.ServicerContext, cache: PrincipalCache | None = None
) -> Principal:
    """Authenticate the peer of `context` from its verified TLS certificate."""
    auth = context.auth_context() or {}
    pems = auth.get(_PEM_KEY) or []
    if len(pems) != 1:
        raise Unauthenticated("no peer certificate (mTLS required)")
    pem = pems[0]
    if cache is not None:
        return cache.principal(pem)
    try:
        return principal_from_certificate(pem)
    except InvalidCertificate as exc:
        raise Unauthenticated(str(exc)) from None


Behavior = Callable[..., Any]


@dataclass(frozen=True)
class _Refusal:
    code: grpc.StatusCode
    principal: Principal | None
    reason: str
    trailing: tuple[tuple[str, str], ...] = ()


def _is_async(behavior: Behavior) -> bool:
    """Coroutine or async-generator function (also via partial, bound method, __call__)."""
    for f in (behavior, getattr(type(behavior), "__call__", None)):
        if inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f):
            return True
    return False


async def _stream_result(
    behavior: Behavior, arg: Any, context: Any
) -> AsyncIterator[Any]:
    result = behavior(arg, context)
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:  # a coroutine that writes with context.write()
        await result


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticate, authorise by role, and rate-limit every RPC.

    `policy` maps full method names ("/twinmpc.v1.Upload/UploadReports") to the
    roles allowed to call them. Methods of `open_services` skip all checks except
    the TLS handshake; any other method absent from `policy` is refused.
    """

    def __init__(
        self,
        policy: Mapping[str, Iterable[Role | str]],
        *,
        open_services: Iterable[str] = DEFAULT_OPEN_SERVICES,
        rate_limiter: RateLimiter | None = None,
        message_cost: Mapping[str, Callable[[Any], int]] | None = None,
        cache: PrincipalCache | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        table: dict[str, frozenset[Role]] = {}
        for method, roles in policy.items():
            if not isinstance(method, str) or _METHOD_RE.fullmatch(method) is None:
                raise ValueError(f"policy key {method!r} is not a '/package.Service/Method' name")
            if isinstance(roles, (str, Role)):
                raise TypeError(f"policy for {method} must be a collection of roles")
            allowed = frozenset(Role(r) for r in roles)
            if not allowed:
                raise ValueError(f"policy for {method} allows no role; omit it to deny")
            table[method] = allowed
        self._policy = table
        self._open = frozenset(open_services)
        self._limiter = rate_limiter
        # Client-streaming methods charged per request message (e.g. one token per report in
        # an upload batch) instead of once per call: a stream cannot carry more than the limit.
        self._message_cost = dict(message_cost or {})
        self._cache = cache if cache is not None else PrincipalCache()
        self._log = logger if logger is not None else logging.getLogger("twinmpc.auth")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        match = _METHOD_RE.fullmatch(method)
        if match is not None and match.group(1) in self._open:
            return handler
        return self._wrap(handler, method)

    def _decide(self, method: str, context: grpc.aio.ServicerContext, charge: bool = True) -> Principal | _Refusal:
        """Authenticate, authorise, rate-limit: the admitted Principal or why not."""
        try:
            principal = principal_from_context(context, self._cache)
        except Unauthenticated as exc:
            return _Refusal(grpc.StatusCode.UNAUTHENTICATED, None, str(exc))
        allowed = self._policy.get(method)
        if allowed is None:
            return _Refusal(
                grpc.StatusCode.PERMISSION_DENIED, principal,
                f"method {method} is not in the role policy (deny by default)",
            )
        if principal.role not in allowed:
            need = ", ".join(sorted(r.value for r in allowed))
            noun = "role" if len(allowed) == 1 else "one of roles"
            return _Refusal(
                grpc.StatusCode.PERMISSION_DENIED, principal,
                f"method {method} requires {noun} {need}; caller has role {principal.role.value}",
            )
        if self._limiter is not None and charge:
            try:
                self._limiter.acquire(principal, method)
            except RateLimited as exc:
                retry_ms = -(-exc.retry_after_ns // 1_000_000)
                return _Refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, principal, str(exc),
                    (("retry-after-ms", str(retry_ms)),),
                )
        return principal

    async def _admit(self, method: str, context: grpc.aio.ServicerContext, charge: bool = True) -> Principal:
        """Publish and return the admitted Principal, or log the refusal and abort the RPC."""
        decision = self._decide(method, context, charge)
        if isinstance(decision, Principal):
            _principal_var.set(decision)
            return decision
        fields = {
            "event": "rpc_refused",
            "code": decision.code.name,
            "method": method,
            "identity": decision.principal.identity if decision.principal else None,
            "role": decision.principal.role.value if decision.principal else None,
            "peer": context.peer(),
            "reason": decision.reason,
        }
        self._log.warning("rpc_refused %s", json.dumps(fields), extra={"twinmpc": fields})
        await context.abort(decision.code, decision.reason, trailing_metadata=decision.trailing)
        raise AssertionError("unreachable: abort raises")

    async def _metered(self, requests: AsyncIterator[Any], principal: Principal, method: str,
                       cost: Callable[[Any], int]) -> AsyncIterator[Any]:
        """Charge each request message before the servicer sees it; `RateLimited` ends the stream."""
        async for message in requests:
            if self._limiter is not None:
                self._limiter.acquire(principal, method, max(1, cost(message)))
            yield message

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        behavior = (
            handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        )
        if not _is_async(behavior):
            # Refuse before anything runs: a sync behaviour would block the event loop
            # and cannot read grpc.aio request streams.
            raise TypeError(f"{method}: AuthInterceptor supports async handlers only")
        admit = self._admit
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if not handler.request_streaming and not handler.response_streaming:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(method, context)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
        if not handler.request_streaming:
            inner = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await admit(method, context)
                async for item in _stream_result(inner, request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
        if not handler.response_streaming:
            inner = handler.stream_unary
            cost = self._message_cost.get(method)
            metered = self._metered

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                principal = await admit(method, context, cost is None)
                if cost is not None:
                    requests = metered(requests, principal, method, cost)
                return await inner(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
        inner = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await admit(method, context)
            async for item in _stream_result(inner, requests, context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)
