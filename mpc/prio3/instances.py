"""The draft's Prio3 variants (draft-irtf-cfrg-vdaf-18, Section 7.4) and our L2 extension.

Each fixes a validity circuit, its field backend (mpc/prio3/params.py), the
number of proofs and the algorithm ID; parameters are checked here so that a
bad task fails with `InvalidTask` before any report is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from twinmpc.crypto.field import Field64, Field128, _PrimeField
from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.prio3.bounded_l2 import FixedPointBoundedL2Vec
from twinmpc.mpc.prio3.circuits import Count, Histogram, MultihotCountVec, Sum, SumVec
from twinmpc.mpc.prio3.params import field64_backend, field128_backend
from twinmpc.mpc.prio3.prio3 import Prio3


class Prio3Count(Prio3[int, int]):
    """Draft Section 7.4.1, ID 0x00000001, Field64, 1 proof."""

    def __init__(self, shares: int) -> None:
        super().__init__(shares, Count(field64_backend(1)), 1, 0x00000001)


class Prio3Sum(Prio3[int, int]):
    """Draft Section 7.4.2, ID 0x00000002, Field64, 1 proof."""

    def __init__(self, shares: int, max_measurement: int) -> None:
        _check_pos_int("max_measurement", max_measurement)
        try:
            valid = Sum(field64_backend(max_measurement.bit_length()), max_measurement)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, 1, 0x00000002)


class Prio3SumVec(Prio3[list[int], list[int]]):
    """Draft Section 7.4.3, ID 0x00000003, Field128, 1 proof."""

    def __init__(self, shares: int, length: int, max_measurement: int, chunk_length: int) -> None:
        for name, v in (("length", length), ("max_measurement", max_measurement), ("chunk_length", chunk_length)):
            _check_pos_int(name, v)
        try:
            bits = max_measurement.bit_length()
            valid = SumVec(field128_backend(length * bits), length, max_measurement, chunk_length)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, 1, 0x00000003)


class Prio3Histogram(Prio3[int, list[int]]):
    """Draft Section 7.4.4, ID 0x00000004, Field128, 1 proof."""

    def __init__(self, shares: int, length: int, chunk_length: int) -> None:
        for name, v in (("length", length), ("chunk_length", chunk_length)):
            _check_pos_int(name, v)
        try:
            valid = Histogram(field128_backend(length), length, chunk_length)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, 1, 0x00000004)


class Prio3MultihotCountVec(Prio3[list[int], list[int]]):
    """Draft Section 7.4.5, ID 0x00000005, Field128, 1 proof."""

    def __init__(self, shares: int, length: int, max_weight: int, chunk_length: int) -> None:
        for name, v in (("length", length), ("max_weight", max_weight), ("chunk_length", chunk_length)):
            _check_pos_int(name, v)
        try:
            valid = MultihotCountVec(field128_backend(length), length, max_weight, chunk_length)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, 1, 0x00000005)


class Prio3SumVecWithMultiproof(Prio3[list[int], list[int]]):
    """Draft Section 7.4.3 with a smaller field and several proofs (test codepoint 0xFFFFFFFF).

    The draft's vectors use Field64 with 3 proofs; see docs/prio3.md for the
    robustness trade-off (Section 9.7 of the draft).
    """

    def __init__(
        self,
        shares: int,
        length: int,
        max_measurement: int,
        chunk_length: int,
        num_proofs: int = 3,
        field: type[_PrimeField] = Field64,
    ) -> None:
        for name, v in (("length", length), ("max_measurement", max_measurement), ("chunk_length", chunk_length)):
            _check_pos_int(name, v)
        if field not in (Field64, Field128):
            raise InvalidTask("field must be Field64 or Field128")
        if field is Field64 and num_proofs < 2:
            raise InvalidTask("Field64 needs at least 2 proofs for the draft's robustness bound")
        try:
            meas_len = length * max_measurement.bit_length()
            field = field128_backend(meas_len) if field is Field128 else field64_backend(meas_len)
            valid = SumVec(field, length, max_measurement, chunk_length)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, num_proofs, 0xFFFFFFFF)


class Prio3FixedPointBoundedL2Vec(Prio3[Sequence[float], list[float]]):
    """Our extension (private codepoint 0xFFFF1000, Field128): see docs/prio3.md."""

    def __init__(
        self,
        shares: int,
        length: int,
        frac_bits: int,
        chunk_length: int,
        norm_chunk_length: int,
        max_norm_sq: Fraction | int | str = 1,
        num_proofs: int = 1,
    ) -> None:
        for name, v in (("length", length), ("frac_bits", frac_bits), ("chunk_length", chunk_length),
                        ("norm_chunk_length", norm_chunk_length)):
            _check_pos_int(name, v)
        try:
            valid = FixedPointBoundedL2Vec(
                field128_backend(length * (frac_bits + 1)), length, frac_bits, chunk_length, norm_chunk_length,
                Fraction(max_norm_sq),
            )
        except (ValueError, ZeroDivisionError) as exc:
            raise InvalidTask(str(exc)) from exc
        super().__init__(shares, valid, num_proofs, 0xFFFF1000)
        self.valid = valid


def _check_pos_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidTask(f"{name} must be a positive integer")


__all__ = [
    "Prio3Count",
    "Prio3FixedPointBoundedL2Vec",
    "Prio3Histogram",
    "Prio3MultihotCountVec",
    "Prio3Sum",
    "Prio3SumVec",
    "Prio3SumVecWithMultiproof",
]
