"""Every sample configuration in the repository goes through the parser that will read it.

examples/ holds one file per kind; deploy/ carries aggregator configs inside
ConfigMaps. A new sample of an unknown kind fails here until a parser is named
for it, so no sample can rot unparsed.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.paths import REPO
from twinmpc.mpc.task import Task
from twinmpc.services.aggregator.config import load_aggregator_config
from twinmpc.services.edge.config import load_edge_config


def samples() -> list[tuple[str, str]]:
    """(name, text) of every sample config: files in examples/, .toml entries of ConfigMaps in deploy/."""
    found = [(str(p.relative_to(REPO)), p.read_text()) for p in sorted((REPO / "examples").rglob("*")) if p.suffix in (".toml", ".json")]
    for path in sorted((REPO / "deploy").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "ConfigMap":
                found += [(f"{path.relative_to(REPO)}:{key}", text) for key, text in doc["data"].items() if key.endswith(".toml")]
    return found


@pytest.mark.parametrize("name,text", samples(), ids=[n for n, _ in samples()])
def test_sample_parses(name: str, text: str, tmp_path: Path) -> None:
    target = tmp_path / Path(name.split(":")[-1]).name
    target.write_text(text)
    doc = json.loads(text) if target.suffix == ".json" else tomllib.loads(text)
    if "task_id" in doc:
        Task.from_json(json.dumps(doc))
    elif "node_id" in doc:
        load_edge_config(target)
    elif "tls" in doc and "data_dir" in doc:
        load_aggregator_config(target)
    else:
        pytest.fail(f"{name}: no parser is known for this sample; name one in this test")


def test_every_kind_is_sampled() -> None:
    names = [n for n, _ in samples()]
    assert any(n.startswith("examples/") and n.endswith("aggregator.toml") for n in names)
    assert any(n.startswith("examples/") and n.endswith("edge.toml") for n in names)
    assert sum(n.startswith("deploy/") for n in names) == 2  # one aggregator per operator
