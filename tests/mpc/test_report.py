"""Report encoding (mpc.report): annotated known bytes, round trip, and
rejection of truncation, trailing bytes, wrong version and bad fields."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinmpc.mpc.errors import DecodeError
from twinmpc.mpc.report import MAX_PART, REPORT_ID_SIZE, Report

EXAMPLE = Report(bytes(range(16)), 1_700_000_000, b"", (b"\xaa\xbb", b"\xcc"))
EXAMPLE_HEX = (
    "01"  # version
    "000102030405060708090a0b0c0d0e0f"  # report id (= VDAF nonce)
    "000000006553f100"  # time, u64 BE: 1700000000
    "00000000"  # public share length, then (empty) public share
    "02"  # K sealed input shares
    "00000002" "aabb"  # share 0: u32 BE length | bytes
    "00000001" "cc"  # share 1
)


def test_known_encoding() -> None:
    assert EXAMPLE.encode().hex() == EXAMPLE_HEX
    assert Report.decode(bytes.fromhex(EXAMPLE_HEX)) == EXAMPLE


reports = st.builds(
    Report,
    report_id=st.binary(min_size=16, max_size=16),
    time=st.integers(min_value=0, max_value=(1 << 63) - 1),
    public_share=st.binary(max_size=64),
    sealed_shares=st.lists(st.binary(max_size=80), min_size=1, max_size=6).map(tuple),
)


@given(reports)
def test_round_trip(report: Report) -> None:
    data = report.encode()
    assert Report.decode(data) == report
    assert Report.decode(bytearray(data)) == report
    assert Report.decode(memoryview(data)) == report


@given(reports, st.data())
def test_every_truncation_rejected(report: Report, data) -> None:
    encoded = report.encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(DecodeError):
        Report.decode(encoded[:cut])


def test_all_truncations_of_example_rejected() -> None:
    encoded = EXAMPLE.encode()
    for cut in range(len(encoded)):
        with pytest.raises(DecodeError):
            Report.decode(encoded[:cut])


@given(reports, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_rejected(report: Report, tail: bytes) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        Report.decode(report.encode() + tail)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version_rejected(version: int) -> None:
    data = bytearray(EXAMPLE.encode())
    data[0] = version
    with pytest.raises(DecodeError, match=f"unknown report encoding version {version}"):
        Report.decode(bytes(data))


def test_zero_shares_rejected() -> None:
    data = EXAMPLE.encode()[:29] + b"\x00"
    with pytest.raises(DecodeError, match="1..255 sealed shares"):
        Report.decode(data)


def test_time_out_of_range_rejected() -> None:
    data = bytearray(EXAMPLE.encode())
    data[17] = 0x80  # time >= 2^63
    with pytest.raises(DecodeError, match="time"):
        Report.decode(bytes(data))


def test_oversized_length_field_rejected() -> None:
    head = EXAMPLE.encode()[:17 + 8]
    with pytest.raises(DecodeError, match="exceeds"):
        Report.decode(head + struct.pack(">I", MAX_PART + 1) + bytes(64))
    with pytest.raises(DecodeError, match="exceeds"):
        Report.decode(head + struct.pack(">I", 0) + b"\x01" + struct.pack(">I", 0xFFFFFFFF))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"report_id": bytes(15)},
        {"report_id": bytes(17)},
        {"time": -1},
        {"time": 1 << 63},
        {"sealed_shares": ()},
        {"sealed_shares": (b"",) * 256},
    ],
)
def test_constructor_validates(kwargs: dict) -> None:
    fields = {"report_id": bytes(REPORT_ID_SIZE), "time": 0, "public_share": b"", "sealed_shares": (b"x",)}
    with pytest.raises(DecodeError):
        Report(**{**fields, **kwargs})


def test_repr_hides_share_bytes() -> None:
    report = Report(bytes(16), 5, b"", (b"SECRET-SHARE-BYTES",))
    assert "SECRET" not in repr(report)
    assert repr(report) == "Report(id=" + "00" * 16 + ", time=5, shares=1)"
