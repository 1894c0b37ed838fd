"""An aggregator's long-lived secrets on disk: HPKE keypair and datastore key.

Both are created on first start with 0600 permissions (written atomically),
and refused at load if group/other can read them.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from crypto.seal import HpkeKeypair
from mpc.task import b64decode, b64encode


class KeyFileError(Exception):
    """A key file is missing, malformed or too widely readable."""


def _write_secret(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is readable by group/other; chmod 600 it")
    return path.read_bytes()


def load_or_create_hpke(path: Path, suite: str, config_id: int = 1) -> HpkeKeypair:
    if not path.exists():
        kp = HpkeKeypair.generate(config_id, suite)
        doc = {"config_id": config_id, "suite": suite, "private_key": b64encode(kp.private_bytes())}
        _write_secret(path, json.dumps(doc).encode())
        return kp
    try:
        doc = json.loads(_read_secret(path))
        return HpkeKeypair.from_private_bytes(doc["config_id"], doc["suite"], b64decode(doc["private_key"], "private_key"))
    except (ValueError, KeyError) as exc:
        raise KeyFileError(f"{path}: malformed HPKE key file") from exc


def load_or_create_datastore_key(path: Path) -> bytes:
    if not path.exists():
        key = os.urandom(32)
        _write_secret(path, key)
        return key
    key = _read_secret(path)
    if len(key) != 32:
        raise KeyFileError(f"{path}: datastore key must be 32 bytes")
    return key
