"""What every Prio3 instance shares: the draft's domain separation and the field backend per length.

Domain separation tags follow draft-irtf-cfrg-vdaf-18 Section 6.2.3
(`format_dst` with the USAGE_* codes of Section 7.2); the backend choice
only changes speed, never bytes.
"""

from __future__ import annotations

from twinmpc.crypto.field import Field64, Field64Small, Field128, _PrimeField
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.field_native import Field64Native, Field128Native, kernel_enabled

# Draft-18 Section 6.2.3: format_dst(algo_class, algo, usage) starts with VERSION.
VERSION = 18
ALGO_CLASS_VDAF = 0

USAGE_MEAS_SHARE = 1
USAGE_PROOF_SHARE = 2
USAGE_JOINT_RANDOMNESS = 3
USAGE_PROVE_RANDOMNESS = 4
USAGE_QUERY_RANDOMNESS = 5
USAGE_JOINT_RAND_SEED = 6
USAGE_JOINT_RAND_PART = 7


# Above this many encoded-measurement elements, Field128 work runs on the uint64
# limb backend (faster on long vectors); below it on Python-int object arrays
# (less per-call overhead).  Both give identical bytes.
LIMB_BACKEND_MIN_LEN = 1024


def field128_backend(meas_len: int) -> type[_PrimeField]:
    """Field128 implementation suited to a circuit of this measurement length.

    The compiled kernel (crypto.field_native) wins at every size; the numpy
    reference path picks Python ints or limbs by size.
    """
    if kernel_enabled():
        return Field128Native
    return Field128Limbs if meas_len >= LIMB_BACKEND_MIN_LEN else Field128


# Below this many encoded-measurement elements, Field64 runs on object arrays.
UINT64_BACKEND_MIN_LEN = 256


def field64_backend(meas_len: int) -> type[_PrimeField]:
    """Field64 implementation suited to a circuit of this measurement length (as field128_backend)."""
    if kernel_enabled():
        return Field64Native
    return Field64 if meas_len >= UINT64_BACKEND_MIN_LEN else Field64Small


def format_dst(algo_class: int, algo: int, usage: int) -> bytes:
    """Domain separation tag prefix (draft Section 6.2.3)."""
    return bytes([VERSION, algo_class]) + algo.to_bytes(4, "big") + usage.to_bytes(2, "big")


__all__ = [
    "ALGO_CLASS_VDAF",
    "LIMB_BACKEND_MIN_LEN",
    "UINT64_BACKEND_MIN_LEN",
    "USAGE_JOINT_RANDOMNESS",
    "USAGE_JOINT_RAND_PART",
    "USAGE_JOINT_RAND_SEED",
    "USAGE_MEAS_SHARE",
    "USAGE_PROOF_SHARE",
    "USAGE_PROVE_RANDOMNESS",
    "USAGE_QUERY_RANDOMNESS",
    "VERSION",
    "field128_backend",
    "field64_backend",
    "format_dst",
]
