"""Per-caller token buckets for gRPC methods (controllers are rate-limited, DESIGN.md).

One bucket per (principal, method class): methods are grouped into classes
("upload", "collect", ...) that share a budget, so a caller cannot multiply its
allowance by spreading over sibling methods. A bucket holds at most `burst` tokens
and refills at `rate` tokens per second; a call takes one token (uploads: one per
report, however they are batched or streamed) or is refused with the time until
enough are available.

Arithmetic is exact: the rate is a `Fraction` p/q and a bucket counts in units of
1/(q * 10^9) token against an integer nanosecond clock, so refill never drifts.
The clock is injected (`time.monotonic_ns` by default) so tests step time by hand.

Errors::

    TwinMpcError (mpc.errors)
    └── RateLimited    the caller's bucket for this method class is empty

The interceptor in `services.auth` maps `RateLimited` to RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from twinmpc.mpc.errors import TwinMpcError
from twinmpc.services.pki import Principal

__all__ = ["RateLimited", "RateLimiter", "RateSpec"]

_NS_PER_S = 1_000_000_000


class RateLimited(TwinMpcError):
    """The caller exceeded its allowance; `retry_after_ns` says when one token is back."""

    def __init__(self, method_class: str, retry_after_ns: int, reason: str | None = None) -> None:
        super().__init__(
            reason or f"rate limit for method class {method_class!r} exceeded; retry after {retry_after_ns / _NS_PER_S:.3f} s"
        )
        self.method_class = method_class
        self.retry_after_ns = retry_after_ns


def _exact(value: int | str | Fraction | float) -> Fraction:
    # A float such as 0.1 is taken at its shortest decimal repr (1/10), not at its
    # binary expansion, so config values mean what they say.
    if isinstance(value, bool):
        raise TypeError("rate must be a number, not a bool")
    if isinstance(value, float):
        return Fraction(repr(value))
    if isinstance(value, (int, str, Fraction)):
        return Fraction(value)
    raise TypeError(f"rate must be int, str, Fraction or float, got {type(value).__name__}")


@dataclass(frozen=True)
class RateSpec:
    """`rate` tokens per second, at most `burst` tokens banked."""

    rate: Fraction
    burst: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", _exact(self.rate))
        if self.rate <= 0:
            raise ValueError("rate must be positive")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError("burst must be an integer >= 1")


class _Bucket:
    __slots__ = ("units", "last_ns")

    def __init__(self, units: int, last_ns: int) -> None:
        self.units = units
        self.last_ns = last_ns


class RateLimiter:
    """Token buckets keyed by (principal, method class).

    `method_classes` maps full method names ("/pkg.Service/Method") to a class name
    in `limits`; methods not listed fall into `default_class` or, if that is None,
    are not limited. Buckets that have refilled completely are indistinguishable
    from new ones, so they are dropped once more than `max_buckets` exist.
    """

    def __init__(
        self,
        limits: Mapping[str, RateSpec],
        method_classes: Mapping[str, str],
        *,
        default_class: str | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        max_buckets: int = 100_000,
    ) -> None:
        for name, spec in limits.items():
            if not isinstance(spec, RateSpec):
                raise TypeError(f"limit {name!r} must be a RateSpec")
        unknown = {c for c in method_classes.values() if c not in limits}
        if default_class is not None and default_class not in limits:
            unknown.add(default_class)
        if unknown:
            raise ValueError(f"method classes without a limit: {sorted(unknown)}")
        if not isinstance(max_buckets, int) or max_buckets < 1:
            raise ValueError("max_buckets must be a positive integer")
        self._limits = dict(limits)
        self._classes = dict(method_classes)
        self._default = default_class
        self._clock = clock
        self._max_buckets = max_buckets
        self._prune_at = max_buckets
        self._buckets: dict[tuple[Principal, str], _Bucket] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def method_class(self, method: str) -> str | None:
        """The class whose bucket `method` draws from, or None if unlimited."""
        return self._classes.get(method, self._default)

    def acquire(self, principal: Principal, method: str, tokens: int = 1) -> None:
        """Take `tokens` tokens (e.g. one per uploaded report) for `principal` calling `method`, or raise `RateLimited`.

        Nothing is taken when the bucket holds fewer than `tokens`; a request larger than
        the burst can never pass and is refused with that reason.
        """
        cls = self.method_class(method)
        if cls is None:
            return
        spec = self._limits[cls]
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ValueError("tokens must be a positive integer")
        if tokens > spec.burst:
            raise RateLimited(cls, 0, f"{tokens} reports in one message exceed the burst of {spec.burst}; send smaller batches")
        per_token = spec.rate.denominator * _NS_PER_S * tokens  # units in the requested tokens
        refill = spec.rate.numerator  # units gained per nanosecond
        capacity = spec.burst * per_token
        with self._lock:
            now = self._clock()
            key = (principal, cls)
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._prune_at:
                    self._prune(now)
                bucket = _Bucket(capacity, now)
                self._buckets[key] = bucket
            else:
                elapsed = max(0, now - bucket.last_ns)  # an injected clock may step back
                bucket.units = min(capacity, bucket.units + elapsed * refill)
                bucket.last_ns = now
            if bucket.units >= per_token:
                bucket.units -= per_token
                return
            missing = per_token - bucket.units
            raise RateLimited(cls, -(-missing // refill))

    def _prune(self, now: int) -> None:
        for key, bucket in list(self._buckets.items()):
            spec = self._limits[key[1]]
            capacity = spec.burst * spec.rate.denominator * _NS_PER_S
            if bucket.units + max(0, now - bucket.last_ns) * spec.rate.numerator >= capacity:
                del self._buckets[key]
        # If most buckets are still active, wait for the table to double before
        # scanning again, keeping the amortised cost per call constant.
        self._prune_at = max(self._max_buckets, 2 * len(self._buckets))
