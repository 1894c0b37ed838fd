"""The masks journal's status record: what a restarted aggregator and late retries read back."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinmpc.mpc.errors import DecodeError
from twinmpc.services.aggregator.masks_journal import ABORTED, DONE, RUNNING, Status

identities = st.frozensets(st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) < 256), max_size=12)


@given(
    opened=st.integers(0, 2**63),
    closes=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2**32 - 1), st.integers(0, 2**63)), max_size=5),
    outcome=st.sampled_from([RUNNING, DONE, ABORTED]),
    reason=st.text(max_size=80),
    summed=st.none() | identities,
)
def test_status_round_trips(opened, closes, outcome, reason, summed) -> None:  # type: ignore[no-untyped-def]
    status = Status(opened, list(closes), outcome, reason, summed)
    assert Status.decode(status.encode()) == status


def test_version_one_records_still_read_without_summed_identities() -> None:
    old = struct.pack(">BQB", 1, 1234, 1) + struct.pack(">BIQ", 0, 3, 1300) + struct.pack(">BH", DONE, 0)
    status = Status.decode(old)
    assert (status.opened_at_ms, status.closes, status.outcome, status.summed) == (1234, [(0, 3, 1300)], DONE, None)
    with pytest.raises(DecodeError):
        Status.decode(old + b"\x01a")  # version 1 has nothing after the reason


@pytest.mark.parametrize("cut", [1, 5, 12])
def test_truncated_status_is_refused(cut: int) -> None:
    data = Status(1, [(0, 2, 3)], DONE, "", frozenset({"edge-a", "edge-b"})).encode()
    with pytest.raises(DecodeError):
        Status.decode(data[:-cut])
