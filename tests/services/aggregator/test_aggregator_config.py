"""Aggregator configuration files: the sample parses, mistakes name their key."""

from __future__ import annotations

from pathlib import Path

from tests.paths import REPO, OUR_VECTORS, VDAF_VECTORS  # noqa: F401
import pytest

from twinmpc.services.aggregator.config import ConfigError, load_aggregator_config



def test_sample_config_parses():
    cfg = load_aggregator_config(REPO / "examples" / "aggregator.toml")
    assert cfg.identity == "agg0"
    assert cfg.tls.cert == REPO / "examples" / "pki" / "agg0.crt"
    assert cfg.limits.job_size == 2000
    assert cfg.metrics_listen == "127.0.0.1:9464"


@pytest.mark.parametrize(
    "text,needle",
    [
        ('data_dir = "d"\nlisten = "x"\nbogus = 1\n[tls]\ncert="a"\nkey="b"\nca="c"\n', "bogus"),
        ('data_dir = "d"\n', "tls"),
        ('data_dir = "d"\n[tls]\ncert="a"\nkey="b"\nca="c"\n[limits]\njob_size = 0\n', "limits.job_size"),
        ("data_dir = [", "toml"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, needle):
    path = tmp_path / "agg.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_aggregator_config(path)
    assert needle.lower() in str(info.value).lower()
