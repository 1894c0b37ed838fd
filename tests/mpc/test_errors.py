"""The protocol's error names catch what the primitives raise, and only that.

crypto/ defines its own errors (it imports nothing above it); mpc.errors re-exports
the shared ones, so the service layer's `except InvalidReport` and its status
table keep catching a failed seal or decode from crypto/ exactly as before.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import twinmpc.crypto
from twinmpc.crypto import errors as crypto_errors
from twinmpc.crypto import fixedpoint, ring, seal
from twinmpc.crypto.field import Field64
from twinmpc.mpc import errors


def test_shared_names_are_the_same_classes() -> None:
    assert errors.TwinMpcError is crypto_errors.TwinMpcError
    assert errors.InvalidReport is crypto_errors.InvalidInput
    assert errors.InvalidMeasurement is crypto_errors.InvalidValue
    assert errors.DecodeError is crypto_errors.DecodeError
    assert errors.SealError is crypto_errors.SealError


def test_a_tampered_seal_is_an_invalid_report() -> None:
    keypair = seal.HpkeKeypair.generate()
    sealed = bytearray(seal.seal(keypair.config, b"share", b"info"))
    sealed[-1] ^= 1
    with pytest.raises(errors.InvalidReport) as info:
        seal.open_sealed(keypair, bytes(sealed), b"info")
    assert isinstance(info.value, errors.SealError)
    assert isinstance(info.value, crypto_errors.CryptoError)


@pytest.mark.parametrize(
    "decode",
    [lambda: Field64.decode_vec(bytes(7)), lambda: ring.decode(bytes(9), 1)],
    ids=["field", "ring"],
)
def test_a_primitive_decode_failure_is_an_invalid_report(decode) -> None:
    with pytest.raises(errors.InvalidReport) as info:
        decode()
    assert isinstance(info.value, errors.DecodeError)


def test_a_non_finite_value_is_an_invalid_measurement() -> None:
    with pytest.raises(errors.InvalidMeasurement):
        fixedpoint.encode(np.array([np.nan]), 8, 1.0)


@pytest.mark.parametrize("cls", [errors.VerifyError, errors.ReplayedReport, errors.StaleReport])
def test_protocol_rejections_are_no_crypto_errors(cls) -> None:
    assert issubclass(cls, errors.InvalidReport)
    assert not issubclass(cls, crypto_errors.CryptoError)


def test_every_error_a_crypto_module_defines_is_a_crypto_error() -> None:
    defined = []
    for mod in pkgutil.iter_modules(twinmpc.crypto.__path__):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"twinmpc.crypto.{mod.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Exception) and obj.__module__ == module.__name__:
                defined.append(obj)
    shared_bases = {crypto_errors.TwinMpcError, crypto_errors.InvalidInput, crypto_errors.InvalidValue}
    strays = [cls.__qualname__ for cls in defined if cls not in shared_bases and not issubclass(cls, crypto_errors.CryptoError)]
    assert len(defined) >= 8 and not strays, strays
