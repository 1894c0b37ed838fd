"""The committed generated code must match what protoc produces from the .proto today."""

from __future__ import annotations

from pathlib import Path

from twinmpc.protos.generate import ROOT, generate


def test_generated_code_has_not_drifted(tmp_path: Path) -> None:
    fresh = {p.name: p.read_text() for p in generate(tmp_path)}
    committed_dir = ROOT / "protos" / "twinmpc" / "v1"
    assert fresh, "protoc produced nothing"
    for name, text in fresh.items():
        committed = committed_dir / name
        assert committed.exists(), f"{name} is not committed; run python -m twinmpc.protos.generate"
        assert committed.read_text() == text, f"{name} drifted from twinmpc.proto; run python -m twinmpc.protos.generate"


def test_contract_is_versioned() -> None:
    from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb

    assert pb.DESCRIPTOR.package == "twinmpc.v1"
    assert set(pb.DESCRIPTOR.services_by_name) == {"Upload", "Aggregation", "Collection", "TaskAdmin", "Prediction", "SecureAggregation"}
