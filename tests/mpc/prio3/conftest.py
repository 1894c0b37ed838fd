"""Fixtures shared by the Prio3 tests."""

from __future__ import annotations

import os

import pytest

from twinmpc.crypto.field_native import KERNEL_ENV, native_built


@pytest.fixture(params=["native", "numpy"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once on the compiled field kernel and once on the numpy reference path
    (Prio3 reads the choice when a VDAF is constructed)."""
    if request.param == "native" and not native_built():
        reason = "twinmpc.crypto._field_kernel is not built (pip install -e .)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip("LOUD SKIP: " + reason)
    monkeypatch.setenv(KERNEL_ENV, request.param)
    return str(request.param)
