"""Prio3 (draft-irtf-cfrg-vdaf-18, Section 7) and our FixedPointBoundedL2Vec extension.

`prio3_from_params("Prio3Histogram", shares=2, length=100, chunk_length=10)`
builds a validated instance; every class implements `mpc.vdaf.Vdaf`.
"""

from __future__ import annotations

from typing import Any

from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.prio3.instances import (
    Prio3Count,
    Prio3FixedPointBoundedL2Vec,
    Prio3Histogram,
    Prio3MultihotCountVec,
    Prio3Sum,
    Prio3SumVec,
    Prio3SumVecWithMultiproof,
)
from twinmpc.mpc.prio3.prio3 import Prio3
from twinmpc.mpc.vdaf import Vdaf

PRIO3_CLASSES: dict[str, type[Prio3[Any, Any]]] = {
    "Prio3Count": Prio3Count,
    "Prio3Sum": Prio3Sum,
    "Prio3SumVec": Prio3SumVec,
    "Prio3Histogram": Prio3Histogram,
    "Prio3MultihotCountVec": Prio3MultihotCountVec,
    "Prio3SumVecWithMultiproof": Prio3SumVecWithMultiproof,
    "Prio3FixedPointBoundedL2Vec": Prio3FixedPointBoundedL2Vec,
}

_PARAMS: dict[str, tuple[set[str], set[str]]] = {  # (required, optional)
    "Prio3Count": (set(), set()),
    "Prio3Sum": ({"max_measurement"}, set()),
    "Prio3SumVec": ({"length", "max_measurement", "chunk_length"}, set()),
    "Prio3Histogram": ({"length", "chunk_length"}, set()),
    "Prio3MultihotCountVec": ({"length", "max_weight", "chunk_length"}, set()),
    "Prio3SumVecWithMultiproof": ({"length", "max_measurement", "chunk_length"}, {"num_proofs"}),
    "Prio3FixedPointBoundedL2Vec": (
        {"length", "frac_bits", "chunk_length", "norm_chunk_length"},
        {"max_norm_sq", "num_proofs"},
    ),
}


def prio3_from_params(name: str, shares: int, **params: Any) -> Vdaf:
    """Construct a Prio3 variant by name, rejecting unknown or missing parameters (InvalidTask)."""
    if name not in PRIO3_CLASSES:
        raise InvalidTask(f"unknown Prio3 variant {name!r}")
    required, optional = _PARAMS[name]
    given = set(params)
    if given - required - optional:
        raise InvalidTask(f"{name}: unknown parameters {sorted(given - required - optional)}")
    if required - given:
        raise InvalidTask(f"{name}: missing parameters {sorted(required - given)}")
    instance = PRIO3_CLASSES[name](shares, **params)
    return instance  # type: ignore[return-value]


__all__ = [
    "PRIO3_CLASSES",
    "Prio3",
    "Prio3Count",
    "Prio3FixedPointBoundedL2Vec",
    "Prio3Histogram",
    "Prio3MultihotCountVec",
    "Prio3Sum",
    "Prio3SumVec",
    "Prio3SumVecWithMultiproof",
    "prio3_from_params",
]
