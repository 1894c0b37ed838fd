"""Regenerate the committed protobuf/gRPC Python code from protos/twinmpc/v1/*.proto.

Run ``python -m twinmpc.protos.generate`` after editing a .proto; the test
``tests/protos/test_protos.py`` fails if the committed code drifts from the source.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_FILES = sorted((ROOT / "protos" / "twinmpc" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Compile every proto into out_dir (import root = repo root)."""
    from grpc_tools import protoc

    args = ["grpc_tools.protoc", f"-I{ROOT}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    args += [str(p.relative_to(ROOT)) for p in PROTO_FILES]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    generated = sorted((out_dir / "protos" / "twinmpc" / "v1").glob("*_pb2*.py*"))
    for path in generated:
        # protoc names modules after the folder layout; the package installs under `twinmpc.`
        path.write_text(path.read_text().replace("protos.twinmpc.v1", "twinmpc.protos.twinmpc.v1"))
    return generated


def main() -> int:
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
