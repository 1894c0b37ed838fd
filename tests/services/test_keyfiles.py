"""Key files and the HPKE key set: permissions, the set's format, fresh config ids, retirement."""

from __future__ import annotations

import json

import pytest

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.services.keyfiles import (
    ACTIVE,
    RETIRED,
    HpkeKeySet,
    KeyFileError,
    load_hpke_key,
    load_or_create_hpke,
    write_hpke_key,
)

SUITE = "x25519-hkdf-sha256-aes128gcm"


def test_key_files_are_0600_and_refused_when_others_can_read_them(tmp_path):
    path = tmp_path / "hpke_key.json"
    written = write_hpke_key(path, SUITE, config_id=1)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_hpke_key(path).config == written.config
    assert load_or_create_hpke(path, SUITE).private_bytes() == written.private_bytes()  # an existing key is kept
    with pytest.raises(FileExistsError):
        write_hpke_key(path, SUITE)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_hpke_key(path)


def test_a_rotation_adds_a_current_key_under_a_fresh_id_and_keeps_the_old_one_opening():
    first = HpkeKeySet.first(HpkeKeypair.generate(1, SUITE), 100)
    rotated = first.rotated(SUITE, 200)
    assert rotated.current.config.config_id == 2
    assert [k.config.config_id for k in rotated.active] == [2, 1]  # current first, the old one still opens
    assert [e.state for e in rotated.entries] == [ACTIVE, ACTIVE]
    assert rotated.current.config != first.current.config
    again = HpkeKeySet.from_json(rotated.to_json())
    assert [(e.config, e.state, e.created) for e in again.entries] == [(e.config, e.state, e.created) for e in rotated.entries]
    assert again.current.private_bytes() == rotated.current.private_bytes()


def test_retiring_drops_the_private_key_and_the_key_from_the_active_list():
    key_set = HpkeKeySet.first(HpkeKeypair.generate(1, SUITE), 100).rotated(SUITE, 200)
    old = key_set.get(1)
    retired = key_set.retired_key(1, 300)
    entry = retired.get(1)
    assert (entry.state, entry.retired, entry.keypair, entry.config) == (RETIRED, 300, None, old.config)
    assert [k.config.config_id for k in retired.active] == [2] and retired.retired_ids == {1}
    stored = json.loads(retired.to_json())
    assert [sorted(k) for k in stored["keys"]] == [
        ["created", "hpke_config", "retired", "state"],  # nothing secret is left of a retired key
        ["created", "hpke_config", "private_key", "state"],
    ]
    with pytest.raises(ValueError, match="not an active, non-current key"):
        retired.retired_key(2, 400)  # the current key
    with pytest.raises(ValueError):
        retired.retired_key(1, 400)  # already retired


def test_config_ids_count_up_wrap_and_reuse_the_oldest_retired_id_only_when_all_are_taken():
    key_set = HpkeKeySet.first(HpkeKeypair.generate(254, SUITE), 0)
    key_set = key_set.rotated(SUITE, 1).rotated(SUITE, 2)
    assert [e.config.config_id for e in key_set.entries] == [254, 255, 0]
    full = HpkeKeySet.first(HpkeKeypair.generate(0, SUITE), 0)
    for t in range(255):
        full = full.rotated(SUITE, t)
    assert len(full.entries) == 256
    with pytest.raises(ValueError, match="retire some"):
        full.rotated(SUITE, 999)
    full = full.retired_key(7, 1000).retired_key(3, 1001)
    reused = full.rotated(SUITE, 1002)
    assert reused.current.config.config_id == 3  # the entry that is first in the set (the oldest key) gives its id up
    assert len(reused.entries) == 256 and reused.get(7).state == RETIRED


@pytest.mark.parametrize("mangle", [
    lambda doc: {**doc, "version": 2},
    lambda doc: {**doc, "keys": []},
    lambda doc: {**doc, "keys": doc["keys"] * 2},  # a config id twice
    lambda doc: {**doc, "keys": [{**doc["keys"][0], "state": "paused"}]},
    lambda doc: {**doc, "keys": [{k: v for k, v in doc["keys"][0].items() if k != "private_key"}]},  # active without its key
])
def test_a_malformed_key_set_is_refused(mangle):
    doc = json.loads(HpkeKeySet.first(HpkeKeypair.generate(1, SUITE), 100).to_json())
    with pytest.raises(KeyFileError, match="malformed HPKE key set"):
        HpkeKeySet.from_json(json.dumps(mangle(doc)).encode())


def test_the_key_set_redacts_itself():
    key_set = HpkeKeySet.first(HpkeKeypair.generate(1, SUITE), 100)
    secret = key_set.current.private_bytes()
    assert secret.hex() not in repr(key_set) and secret.hex() not in repr(key_set.entries)
