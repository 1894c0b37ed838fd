"""Where tests find the repository's files: every path a test reads lies inside the repository."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors"
OUR_VECTORS = VECTORS / "twinmpc-v1"
# Official draft-irtf-cfrg-vdaf-18 vectors (public conformance data, committed); extra vector
# files dropped into this folder are picked up by the same harnesses.
VDAF_VECTORS = VECTORS / "vdaf-18"
