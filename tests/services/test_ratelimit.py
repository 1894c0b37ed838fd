"""services.ratelimit: exact token buckets on an injected nanosecond clock.

(The RESOURCE_EXHAUSTED mapping on a real server is tested in test_auth.py.)
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.mpc.errors import TwinMpcError
from twinmpc.services.pki import Principal, Role
from twinmpc.services.ratelimit import RateLimited, RateLimiter, RateSpec

S = 1_000_000_000
UPLOAD = "/twinmpc.v1.Upload/UploadReports"
UPLOAD_STREAM = "/twinmpc.v1.Upload/UploadStream"
COLLECT = "/twinmpc.v1.Collect/Collect"
OTHER = "/twinmpc.v1.Admin/ListTasks"
EDGE = Principal("edge-1", Role.EDGE)
EDGE2 = Principal("edge-2", Role.EDGE)


class FakeClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def limiter(clock: FakeClock, rate: int | str | Fraction = 1, burst: int = 2, **kw) -> RateLimiter:
    return RateLimiter(
        {"upload": RateSpec(rate, burst), "collect": RateSpec(1, 1)},
        {UPLOAD: "upload", UPLOAD_STREAM: "upload", COLLECT: "collect"},
        clock=clock,
        **kw,
    )


def drain(lim: RateLimiter, principal: Principal, method: str) -> int:
    """Acquire until refused; return how many succeeded."""
    n = 0
    while True:
        try:
            lim.acquire(principal, method)
        except RateLimited:
            return n
        n += 1


# --- RateSpec --------------------------------------------------------------------------


def test_rate_spec_exact_values() -> None:
    assert RateSpec(0.1, 1).rate == Fraction(1, 10)  # shortest decimal, not binary expansion
    assert RateSpec("5/2", 1).rate == Fraction(5, 2)
    assert RateSpec(Fraction(3, 7), 4).rate == Fraction(3, 7)
    assert RateSpec(20, 1).rate == 20


@pytest.mark.parametrize(
    ("rate", "burst", "error"),
    [
        (0, 1, ValueError),
        (-1, 1, ValueError),
        ("-0.5", 1, ValueError),
        (True, 1, TypeError),
        (None, 1, TypeError),
        (1, 0, ValueError),
        (1, True, ValueError),
        (1, 1.5, ValueError),
    ],
)
def test_rate_spec_rejects(rate: object, burst: object, error: type) -> None:
    with pytest.raises(error):
        RateSpec(rate, burst)  # type: ignore[arg-type]


# --- bucket behaviour --------------------------------------------------------------------


def test_burst_then_refused_with_exact_retry() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    assert drain(lim, EDGE, UPLOAD) == 2
    with pytest.raises(RateLimited) as err:
        lim.acquire(EDGE, UPLOAD)
    assert err.value.retry_after_ns == S and err.value.method_class == "upload"
    assert "retry after 1.000 s" in str(err.value)
    assert isinstance(err.value, TwinMpcError)
    clock.ns += S // 2
    with pytest.raises(RateLimited) as err:
        lim.acquire(EDGE, UPLOAD)
    assert err.value.retry_after_ns == S // 2
    clock.ns += S // 2
    lim.acquire(EDGE, UPLOAD)


def test_fractional_rate_known_answer() -> None:
    # 3 tokens per 7 s: one token takes 7/3 s = 2_333_333_333.33 ns, rounded up.
    clock = FakeClock()
    lim = limiter(clock, rate=Fraction(3, 7), burst=1)
    lim.acquire(EDGE, UPLOAD)
    with pytest.raises(RateLimited) as err:
        lim.acquire(EDGE, UPLOAD)
    assert err.value.retry_after_ns == 2_333_333_334
    clock.ns = 2_333_333_333
    with pytest.raises(RateLimited) as err:
        lim.acquire(EDGE, UPLOAD)
    assert err.value.retry_after_ns == 1
    clock.ns = 2_333_333_334
    lim.acquire(EDGE, UPLOAD)
    # Exactly 7 s after the start three tokens were earned, none lost to rounding.
    clock.ns = 7 * S
    assert drain(lim, EDGE, UPLOAD) == 1  # capped at burst=1
    clock.ns = 7 * S + 7 * S
    lim2 = limiter(clock, rate=Fraction(3, 7), burst=10)
    assert drain(lim2, EDGE, UPLOAD) == 10
    clock.ns += 7 * S
    assert drain(lim2, EDGE, UPLOAD) == 3


def test_idle_time_banks_at_most_burst() -> None:
    clock = FakeClock()
    lim = limiter(clock, rate=5, burst=3)
    assert drain(lim, EDGE, UPLOAD) == 3
    clock.ns += 3600 * S
    assert drain(lim, EDGE, UPLOAD) == 3


def test_buckets_per_principal_and_class() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    lim.acquire(EDGE, UPLOAD)
    lim.acquire(EDGE, UPLOAD_STREAM)  # same class, same bucket
    with pytest.raises(RateLimited):
        lim.acquire(EDGE, UPLOAD)
    lim.acquire(EDGE2, UPLOAD)  # another principal
    lim.acquire(EDGE, COLLECT)  # another class
    # Same identity under another role is another principal.
    lim.acquire(Principal("edge-1", Role.ADMIN), UPLOAD)
    assert len(lim) == 4


def test_unclassified_methods() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    assert lim.method_class(OTHER) is None
    for _ in range(1000):
        lim.acquire(EDGE, OTHER)
    assert len(lim) == 0
    with_default = limiter(clock, default_class="collect")
    assert with_default.method_class(OTHER) == "collect"
    with_default.acquire(EDGE, OTHER)
    with pytest.raises(RateLimited):
        with_default.acquire(EDGE, COLLECT)  # shares the "collect" bucket


def test_clock_stepping_back_grants_nothing() -> None:
    clock = FakeClock()
    clock.ns = 10 * S
    lim = limiter(clock)
    assert drain(lim, EDGE, UPLOAD) == 2
    clock.ns = 0
    with pytest.raises(RateLimited):
        lim.acquire(EDGE, UPLOAD)
    clock.ns = S  # elapsed is measured from the last observation (0), not from 10 s
    lim.acquire(EDGE, UPLOAD)


def test_full_buckets_are_pruned() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_buckets=2)
    lim.acquire(EDGE, UPLOAD)
    lim.acquire(EDGE2, UPLOAD)
    lim.acquire(Principal("edge-3", Role.EDGE), UPLOAD)  # nothing refilled: nothing pruned
    assert len(lim) == 3
    lim.acquire(Principal("edge-4", Role.EDGE), UPLOAD)  # below the doubled threshold
    assert len(lim) == 4
    clock.ns += 10 * S  # all four refill completely
    lim.acquire(Principal("edge-5", Role.EDGE), UPLOAD)
    assert len(lim) == 1
    # A pruned principal starts again from a full bucket, exactly as if never pruned.
    assert drain(lim, EDGE, UPLOAD) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"limits": {}, "method_classes": {UPLOAD: "upload"}}, ValueError, "without a limit"),
        ({"limits": {"a": RateSpec(1, 1)}, "method_classes": {}, "default_class": "b"}, ValueError, "without a limit"),
        ({"limits": {"a": (1, 1)}, "method_classes": {}}, TypeError, "RateSpec"),
        ({"limits": {}, "method_classes": {}, "max_buckets": 0}, ValueError, "max_buckets"),
    ],
)
def test_limiter_rejects_bad_config(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        RateLimiter(**kwargs)


# --- properties ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    num=st.integers(1, 50),
    den=st.integers(1, 50),
    burst=st.integers(1, 8),
    steps=st.lists(st.integers(0, 3 * S), min_size=1, max_size=40),
)
def test_never_more_than_burst_plus_earned(num: int, den: int, burst: int, steps: list[int]) -> None:
    """Over any run, granted <= burst + rate * elapsed; retry_after is exact ..."""
    clock = FakeClock()
    rate = Fraction(num, den)
    lim = limiter(clock, rate=rate, burst=burst)
    granted = 0
    for step in steps:
        clock.ns += step
        try:
            lim.acquire(EDGE, UPLOAD)
            granted += 1
        except RateLimited as err:
            assert err.retry_after_ns >= 1
            # ... and minimal: one nanosecond earlier is still refused, exactly then is not.
            clock.ns += err.retry_after_ns - 1
            with pytest.raises(RateLimited):
                lim.acquire(EDGE, UPLOAD)
            clock.ns += 1
            lim.acquire(EDGE, UPLOAD)
            granted += 1
        assert granted <= burst + rate * clock.ns / S
